#!/usr/bin/env node
// The `baton` command: the compiled CLI. The package ships it built (`prepack`); a clone of the repository
// builds it with `npm run build`.
let main;
try {
  ({ main } = await import('../dist/cli/main.js'));
} catch (error) {
  if (error?.code !== 'ERR_MODULE_NOT_FOUND' || !String(error.message).includes('dist/cli/main.js'))
    throw error;
  process.stderr.write(
    'baton: the CLI is not built (no dist/cli/main.js): in a clone of the repository, run `npm run build`\n',
  );
  process.exit(1);
}
process.exitCode = await main(process.argv, process.env);
