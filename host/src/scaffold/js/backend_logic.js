// What a scale call does, without the bindings (`npm test`).
export function apply(before, wanted) {
  return [wanted, `recorded ${before} → ${wanted} replicas`];
}
