/**
 * Browser-safe Hub API. Node-only pieces (NodeFolderCache, LocalFolderSource,
 * sourceFor) are in ./node.ts.
 */
export * from './source';
export * from './cache';
export * from './hub-source';
export * from './directory-handle';
