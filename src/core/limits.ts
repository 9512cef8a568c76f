/** Platform-wide size limits that are not tier-dependent. */
export const MAX_CODE_BYTES = 1024 * 1024;
export const MAX_DESCRIPTION_CHARS = 4000;
export const MAX_TAGS = 32;
export const MAX_TAG_CHARS = 64;
export const MAX_REQUIREMENTS = 64;
export const MAX_ENV_DECLARATIONS = 64;
export const MAX_SCHEMA_BYTES = 256 * 1024;
export const MAX_CONFIG_BYTES = 64 * 1024;
