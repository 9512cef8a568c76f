// Makes the embedded database's test template once, before the test files start (scripts/test.sh).
// A script file rather than `node -e`: `--input-type`, which `-e` needs for ESM, is inherited by
// worker threads, and the embedded database's thread then fails to start.
const [harness] = process.argv.slice(2);
await (await import(new URL(harness, `file://${process.cwd()}/`).href)).prepareEmbeddedTemplate();
