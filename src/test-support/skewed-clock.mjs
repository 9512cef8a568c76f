// Loaded with `node --import` into a server process of a test, to give it a wall clock that is off
// by MCPWORKS_TEST_CLOCK_SKEW_MS (a node whose clock disagrees with the others'): Date.now() and
// new Date() read the skewed time; everything else is untouched. MCPWORKS_TEST_CLOCK_STEP_MS: each
// Date.now() also jumps that far ahead (a clock by which every round trip looks slow).
const skew = Number(process.env.MCPWORKS_TEST_CLOCK_SKEW_MS ?? 0);
const step = Number(process.env.MCPWORKS_TEST_CLOCK_STEP_MS ?? 0);
let stepped = 0;
if (Number.isFinite(skew) && (skew !== 0 || step > 0)) {
  const RealDate = Date;
  class SkewedDate extends RealDate {
    constructor(...args) {
      if (args.length === 0) super(RealDate.now() + skew);
      else super(...args);
    }
    static now() {
      if (step > 0) stepped += step;
      return RealDate.now() + skew + stepped;
    }
  }
  globalThis.Date = SkewedDate;
}
