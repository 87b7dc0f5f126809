// workflow-native is a native addon (a `.node` file): the server must load it with Node's
// own `require`, not bundle it. Without this line `next build` fails with
//   Turbopack: "non-ecmascript placeable asset … (node addon)"
//   webpack:   "Module parse failed: Unexpected character"
/** @type {import('next').NextConfig} */
const nextConfig = {
  serverExternalPackages: ['workflow-native'],
  // Only because this example lives inside the workflow-native repository, whose own
  // lockfile would otherwise be taken for the workspace root.
  turbopack: { root: import.meta.dirname },
}

export default nextConfig
