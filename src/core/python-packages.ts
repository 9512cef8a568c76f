import { DomainError } from './errors.js';
import { PYTHON_PACKAGES, type PythonPackage } from './python-packages-data.js';

export { PYTHON_PACKAGES, type PythonPackage };

/** Extra names people use for allow-listed packages, beyond their import names. */
const EXTRA_ALIASES: Record<string, string> = {
  beautifulsoup: 'beautifulsoup4',
  'python-jose': 'pyjwt',
  jwt: 'pyjwt',
  psycopg2: 'psycopg2-binary',
  psycopg: 'psycopg2-binary',
  dateutil: 'python-dateutil',
  slugify: 'python-slugify',
  docx: 'python-docx',
  scikit_learn: 'scikit-learn',
  sklearn: 'scikit-learn',
  pil: 'pillow',
  yaml: 'pyyaml',
  bs4: 'beautifulsoup4',
  attr: 'attrs',
  tz: 'pytz',
  typing_extensions: 'typing-extensions',
};

function normalise(name: string): string {
  return name.trim().toLowerCase().replace(/[_.]+/g, '-');
}

const BY_NAME = new Map<string, PythonPackage>();
for (const pkg of PYTHON_PACKAGES) {
  BY_NAME.set(normalise(pkg.name), pkg);
  BY_NAME.set(normalise(pkg.importName), pkg);
}
for (const [alias, target] of Object.entries(EXTRA_ALIASES)) {
  const pkg = BY_NAME.get(normalise(target));
  if (pkg) BY_NAME.set(normalise(alias), pkg);
}

export function findPythonPackage(requirement: string): PythonPackage | undefined {
  return BY_NAME.get(normalise(stripSpecifier(requirement)));
}

/** `httpx>=0.23`, `requests[socks]`, `numpy ; python_version>"3"` → the bare distribution name. */
export function stripSpecifier(requirement: string): string {
  return requirement.split(/[\s;\[<>=!~@]/, 1)[0] ?? '';
}

function editDistance(a: string, b: string): number {
  const previous = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let diagonal = previous[0]!;
    previous[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const above = previous[j]!;
      previous[j] = Math.min(above + 1, previous[j - 1]! + 1, diagonal + (a[i - 1] === b[j - 1] ? 0 : 1));
      diagonal = above;
    }
  }
  return previous[b.length]!;
}

/** The allowed names closest to an unknown one, for the error message. */
export function nearestPackageNames(requirement: string, count = 3): string[] {
  const wanted = normalise(stripSpecifier(requirement));
  const scored = new Map<string, number>();
  for (const [key, pkg] of BY_NAME) {
    const distance = key.startsWith(wanted) || wanted.startsWith(key) ? 0.5 : editDistance(wanted, key);
    const best = scored.get(pkg.name);
    if (best === undefined || distance < best) scored.set(pkg.name, distance);
  }
  return [...scored.entries()]
    .sort((x, y) => x[1] - y[1] || x[0].localeCompare(y[0]))
    .slice(0, count)
    .map(([name]) => name);
}

/**
 * Resolves Python requirements against the allow-list: canonical names, de-duplicated, sorted.
 * Version specifiers are dropped because the platform pins one Debian version of each package.
 */
export function resolvePythonRequirements(requirements: readonly string[]): string[] {
  const resolved = new Set<string>();
  for (const requirement of requirements) {
    if (typeof requirement !== 'string' || stripSpecifier(requirement) === '') {
      throw new DomainError('validation_error', `invalid requirement ${JSON.stringify(requirement)}`, { field: 'requirements' });
    }
    const pkg = findPythonPackage(requirement);
    if (!pkg) {
      const nearest = nearestPackageNames(requirement);
      throw new DomainError(
        'unknown_package',
        `Python package '${stripSpecifier(requirement)}' is not on the allow-list; nearest allowed: ${nearest.join(', ')}. Call list_packages for the full list.`,
        { package: stripSpecifier(requirement), suggestions: nearest },
      );
    }
    if (!pkg.available) {
      throw new DomainError(
        'unknown_package',
        `Python package '${pkg.name}' is on the allow-list but not installed on this server (Debian 12 does not package it)`,
        { package: pkg.name, suggestions: [] },
      );
    }
    resolved.add(pkg.name);
  }
  return [...resolved].sort();
}

export interface PackageCategory {
  category: string;
  /** version: what is installed (upstream version), null where unknown or unavailable. */
  packages: { name: string; import_name: string; available: boolean; version: string | null }[];
}

export function packagesByCategory(versions: ReadonlyMap<string, string> = new Map()): PackageCategory[] {
  const categories = new Map<string, PackageCategory>();
  for (const pkg of PYTHON_PACKAGES) {
    let entry = categories.get(pkg.category);
    if (!entry) {
      entry = { category: pkg.category, packages: [] };
      categories.set(pkg.category, entry);
    }
    const version = pkg.debianPackage ? versions.get(pkg.debianPackage) : undefined;
    entry.packages.push({
      name: pkg.name,
      import_name: pkg.importName,
      available: pkg.available,
      version: pkg.available ? (version ?? null) : null,
    });
  }
  return [...categories.values()];
}

/** npm package specs for TypeScript functions: `name`, `@scope/name`, `name@range`. */
const NPM_SPEC = /^(@[a-z0-9][a-z0-9._~-]*\/)?[a-z0-9][a-z0-9._~-]{0,213}(@[A-Za-z0-9.^~<>=*|x+ -]{1,64})?$/;

export function validateNpmRequirements(requirements: readonly string[]): string[] {
  const resolved = new Set<string>();
  for (const requirement of requirements) {
    if (typeof requirement !== 'string' || !NPM_SPEC.test(requirement.trim())) {
      throw new DomainError('validation_error', `invalid npm requirement ${JSON.stringify(requirement)}: use 'name' or 'name@version'`, {
        field: 'requirements',
      });
    }
    resolved.add(requirement.trim());
  }
  return [...resolved].sort();
}
