# shellcheck shell=bash
# Sourced by the tests that run an npm package (the k8s schema validator, the openai client):
#   npm_pinned_install SRC CACHE WHAT
# installs SRC/package.json at the versions of SRC/package-lock.json into CACHE, unless CACHE
# already holds exactly that lock file's tree (later runs are offline). When npm cannot reach its
# registry it prints why and exits 77 (ctest: skipped); any other npm failure exits 1.
npm_pinned_install() {
  local src="$1" cache="$2" what="$3" out
  mkdir -p "$cache"
  if cmp -s "$src/package-lock.json" "$cache/installed.lock" && [[ -d "$cache/node_modules" ]]; then
    return 0
  fi
  cp "$src/package.json" "$src/package-lock.json" "$cache/"
  if ! out="$(cd "$cache" && npm ci --no-audit --no-fund --ignore-scripts 2>&1)"; then
    if grep -Eq 'ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ECONNRESET|ETIMEDOUT|ENETUNREACH|network|proxy' <<<"$out"; then
      echo "SKIP: npm cannot reach its registry to install $what (needed once):"
      tail -n 5 <<<"$out"
      exit 77
    fi
    echo "FAIL: npm ci in $cache:" >&2
    echo "$out" >&2
    exit 1
  fi
  cp "$src/package-lock.json" "$cache/installed.lock"
}
