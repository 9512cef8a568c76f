// Loaded with `node --import` into a server process of a test, to give it a wall clock that is off
// by MCPWORKS_TEST_CLOCK_SKEW_MS (a node whose clock disagrees with the others'): Date.now() and
// new Date() read the skewed time; everything else is untouched.
const skew = Number(process.env.MCPWORKS_TEST_CLOCK_SKEW_MS ?? 0);
if (Number.isFinite(skew) && skew !== 0) {
  const RealDate = Date;
  class SkewedDate extends RealDate {
    constructor(...args) {
      if (args.length === 0) super(RealDate.now() + skew);
      else super(...args);
    }
    static now() {
      return RealDate.now() + skew;
    }
  }
  globalThis.Date = SkewedDate;
}
