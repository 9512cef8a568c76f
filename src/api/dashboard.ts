import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Context, Hono } from 'hono';

/** The dashboard's client-side routes: each answers the app's page (the app then shows that page). */
export const DASHBOARD_PAGES = [
  '/',
  '/login',
  '/register',
  '/keys',
  '/connect',
  '/functions',
  '/executions',
  '/agents',
  '/usage',
  '/account',
  // Sign-in from MCP clients: /oauth/authorize sends the owner here (src/web/pages/consent.tsx).
  '/consent',
] as const;
export const DASHBOARD_ASSETS_PATH = '/assets/';

/**
 * Only this origin's scripts, styles and requests; no inline script, no framing (clickjacking), no
 * <base> or form posting elsewhere. The built app needs nothing more (scripts/build-web.mjs).
 */
const CONTENT_SECURITY_POLICY = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ');

const SECURITY_HEADERS: Record<string, string> = {
  'Content-Security-Policy': CONTENT_SECURITY_POLICY,
  'X-Content-Type-Options': 'nosniff',
  'X-Frame-Options': 'DENY',
  'Referrer-Policy': 'no-referrer',
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Resource-Policy': 'same-origin',
};

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.map': 'application/json',
};

export interface DashboardAssets {
  index: Uint8Array;
  /** By file name under /assets/ (content-hashed names: cached for good). */
  files: Map<string, { body: Uint8Array; type: string }>;
}

/**
 * Where `npm run build` puts the app: dist/web beside dist/api when running the build, and the
 * same dist/web when running from src/ (tests under tsx).
 */
export function defaultDashboardDir(): string | undefined {
  const here = path.dirname(fileURLToPath(import.meta.url));
  return [path.join(here, '..', 'web'), path.join(here, '..', '..', 'dist', 'web')].find((dir) => existsSync(path.join(dir, 'index.html')));
}

/** The built app, read once at start (a few small files); undefined when it was never built. */
export function loadDashboard(dir: string | undefined): DashboardAssets | undefined {
  if (!dir || !existsSync(path.join(dir, 'index.html'))) return undefined;
  const files = new Map<string, { body: Uint8Array; type: string }>();
  const assets = path.join(dir, 'assets');
  if (existsSync(assets)) {
    for (const name of readdirSync(assets)) {
      const type = TYPES[path.extname(name)];
      if (type) files.set(name, { body: readFileSync(path.join(assets, name)), type });
    }
  }
  return { index: readFileSync(path.join(dir, 'index.html')), files };
}

function respond(c: Context, body: Uint8Array | string, type: string, cache: string, status: 200 | 404 | 503 = 200): Response {
  return c.body(typeof body === 'string' ? body : new Uint8Array(body), status, {
    ...SECURITY_HEADERS,
    'Content-Type': type,
    'Cache-Control': cache,
  });
}

/**
 * GET (and HEAD) of the dashboard's pages and assets. Every other path keeps its JSON answers: the
 * API's routes, and the JSON 404 of an unknown one.
 */
export function mountDashboard(app: Hono, assets: DashboardAssets | undefined): void {
  for (const page of DASHBOARD_PAGES) {
    app.get(page, (c) =>
      assets
        ? respond(c, assets.index, TYPES['.html']!, 'no-cache')
        : respond(c, 'The dashboard was not built: run `npm run build` (or `make run`).\n', 'text/plain; charset=utf-8', 'no-store', 503),
    );
  }
  app.get(`${DASHBOARD_ASSETS_PATH}:name`, async (c, next) => {
    const file = assets?.files.get(c.req.param('name'));
    if (!file) return next();
    return respond(c, file.body, file.type, 'public, max-age=31536000, immutable');
  });
}
