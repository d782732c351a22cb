// Prints one plain closing line, "N passed, N failed, N skipped", after vitest's own summary. The tests of a
// file that failed before they could run (a hook, an import) count as failed, not skipped: nothing that did
// not run is reported as if it had been left out on purpose.
import type { Reporter, TestModule } from 'vitest/node';

export default class SummaryReporter implements Reporter {
  onTestRunEnd(testModules: readonly TestModule[]): void {
    let passed = 0;
    let failed = 0;
    let skipped = 0;
    let brokenFiles = 0;
    for (const module of testModules) {
      const broken = module.errors().length > 0;
      if (broken) brokenFiles += 1;
      let counted = 0;
      for (const test of module.children.allTests()) {
        counted += 1;
        const state = test.result().state;
        if (state === 'passed') passed += 1;
        else if (state === 'failed' || broken) failed += 1;
        else skipped += 1;
      }
      // A file that failed to load has no tests to count: count the file.
      if (broken && counted === 0) failed += 1;
    }
    const files =
      brokenFiles > 0 ? ` (${brokenFiles} file${brokenFiles === 1 ? '' : 's'} failed to run)` : '';
    process.stdout.write(`\n${passed} passed, ${failed} failed, ${skipped} skipped${files}\n`);
  }
}
