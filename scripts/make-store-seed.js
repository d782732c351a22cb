// Makes the seed of a new embedded store (src/store/seed.ts) in dist/store/seed/, once per PGlite version:
// a build that finds it made already does nothing here. Runs after tsc, on the compiled module.
import { makeSeed } from '../dist/store/seed.js';

const started = Date.now();
const { path, made } = await makeSeed();
if (made) process.stderr.write(`made ${path} in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
