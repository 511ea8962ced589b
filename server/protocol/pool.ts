/**
 * `GET /v1/pool`: what a job could ask for on this broker, in one answer — the hosts (as `GET /v1/hosts`), each
 * queue's time limits and length, the Slurm clusters with their partitions and gres, and the images the broker
 * knows of. The language server completes and checks `# gpurun:` lines against it.
 */
import type { HostInfo, Queue } from './jobs.ts';

export interface PoolQueue {
  name: Queue;
  /** Longest time limit a job may ask for, seconds; 0 = no cap. */
  maxTimeSec: number;
  /** Time limit of a job that asks for none, seconds; 0 = none. */
  defaultTimeSec: number;
  /** Jobs of the host pool waiting in this queue now, all users. */
  queued: number;
}

export interface PoolCluster {
  name: string;
  /** Slurm partition of each queue. */
  partitions: Record<Queue, string>;
  /** The gres name GPUs are asked for with (`--gres=gpu:2`). */
  gres: string;
  /** Whether jobs with an image run in it (pyxis). */
  images: boolean;
}

export interface PoolSnapshot {
  /** ISO-8601 time the broker made this answer. */
  at: string;
  hosts: HostInfo[];
  queues: PoolQueue[];
  clusters: PoolCluster[];
  /** "hosts" and the clusters' names, and the one a job gets when it names none. */
  backends: string[];
  defaultBackend: string;
  /** Images known to the broker: its default image first, then those its up Docker hosts have; may be empty. */
  images: string[];
  /** The image a job gets when it names none (absent when the broker has no default). */
  defaultImage?: string;
}
