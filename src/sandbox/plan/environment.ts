/** The sandbox's fixed identities and environment: the same for every run, nothing from the server. */

/** The user and group the function sees inside its namespace. */
export const INNER_ID = 1000;

/** The group of every sandbox (nogroup): per-user limits are per uid, so sharing it shares none. */
export const SANDBOX_GID = 65534;

/** The whole environment bubblewrap and the function start with: nothing from the server. */
export function sandboxEnvironment(): Record<string, string> {
  return {
    PATH: '/usr/local/bin:/usr/bin:/bin',
    HOME: '/tmp',
    TMPDIR: '/tmp',
    LANG: 'C.UTF-8',
    MPLCONFIGDIR: '/tmp',
    MPLBACKEND: 'Agg',
  };
}
