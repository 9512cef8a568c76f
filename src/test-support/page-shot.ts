import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import type { Page } from 'playwright-core';

/**
 * A page as it is (the e2e tests' accessibility basics): every control a person can reach has an
 * accessible name (a label, aria-label/labelledby or its text), then its screenshot `NAME.png` in `dir`.
 */
export async function shootPage(page: Page, dir: string, name: string): Promise<void> {
  const unlabelled = await page.evaluate(() =>
    [...document.querySelectorAll<HTMLElement>('input:not([type=hidden]), select, textarea, button, a[href]')]
      .filter((element) => {
        const labels = (element as HTMLInputElement).labels;
        const named = element.getAttribute('aria-label') || element.getAttribute('aria-labelledby') || element.textContent?.trim();
        return !(labels && labels.length > 0) && !named;
      })
      .map((element) => element.outerHTML.slice(0, 120)),
  );
  assert.deepEqual(unlabelled, [], `controls without a label on ${name}`);
  mkdirSync(dir, { recursive: true });
  await page.screenshot({ path: path.join(dir, `${name}.png`) });
}
