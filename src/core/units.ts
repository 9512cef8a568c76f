/** Byte sizes, written once: limits and settings are given in MiB (`MB` in names and messages). */
export const MB = 1024 * 1024;
