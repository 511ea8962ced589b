export * from './jobs.ts';
export * from './errors.ts';
