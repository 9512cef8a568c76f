/** Platform-wide size limits that are not tier-dependent. */
export const MAX_CODE_BYTES = 1024 * 1024;
export const MAX_DESCRIPTION_CHARS = 4000;
export const MAX_TAGS = 32;
export const MAX_TAG_CHARS = 64;
export const MAX_REQUIREMENTS = 64;
export const MAX_ENV_DECLARATIONS = 64;
export const MAX_SCHEMA_BYTES = 256 * 1024;
export const MAX_CONFIG_BYTES = 64 * 1024;
/** JSON nesting a function's input_schema/output_schema may have (checked before anything else reads it). */
export const MAX_SCHEMA_DEPTH = 128;
/** Tenant schemas are compiled and applied only in worker threads, each check within these bounds. */
export const SCHEMA_CHECK_DEADLINE_MS = 1000;
export const SCHEMA_WORKER_HEAP_MB = 64;
/** A value checked against a schema (a run's input or result) may be nested this deep… */
export const MAX_CHECKED_DEPTH = 128;
/** …and hold this many JSON values (every object, array, string, number, boolean and null). */
export const MAX_CHECKED_VALUES = 500_000;
