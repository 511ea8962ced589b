/**
 * Web addresses a job prints for itself (TensorBoard's `http://localhost:6006/`, Jupyter's
 * `http://127.0.0.1:8888/lab?token=…`, `python -m http.server`'s `http://0.0.0.0:8000/`): the port and the path
 * with its query, to open through a forward. Pure. Only addresses of the job's own machine count (localhost,
 * 127.x, 0.0.0.0, [::], a bare host name); other sites a job mentions (docs, downloads) do not.
 */

export interface JobUrl {
  port: number;
  /** Path and query, starting with `/`. */
  path: string;
}

const URL_RE = /\bhttps?:\/\/(localhost|127(?:\.\d{1,3}){3}|0\.0\.0\.0|\[::1?\]|[A-Za-z][A-Za-z0-9-]{0,62}):(\d{2,5})(\/[^\s'"<>)\]\x1b]*)?/g;

/** The job-local addresses in `text`, first seen first, one per port. */
export function findJobUrls(text: string): JobUrl[] {
  const out: JobUrl[] = [];
  for (const m of text.matchAll(URL_RE)) {
    const port = Number(m[2]);
    if (port < 1 || port > 65535 || out.some((u) => u.port === port)) continue;
    out.push({ port, path: (m[3] ?? '/').replace(/[.,;:]+$/, '') || '/' });
  }
  return out;
}
