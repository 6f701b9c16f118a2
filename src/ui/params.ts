/** Page settings taken from the URL: `?endpoint=`, `?repo=`, `?revision=`. */
import { DEFAULT_ENDPOINT } from '../hub/hub-source';

/** The test model of this project (a local mirror serves it under this id; see `npm run hub`). */
export const DEFAULT_REPO = 'stories260K';

export interface PageParams {
  endpoint: string;
  repo: string;
  revision: string;
}

export function pageParams(search: string = location.search): PageParams {
  const q = new URLSearchParams(search);
  return {
    endpoint: q.get('endpoint') || DEFAULT_ENDPOINT,
    repo: q.get('repo') || DEFAULT_REPO,
    revision: q.get('revision') || 'main',
  };
}
