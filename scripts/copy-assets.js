// Copies the files the compiled code reads at run time (Baton's SQL migrations, the dashboard's page and
// assets, the templates of `baton init`) next to it in dist/.
import { cpSync } from 'node:fs';

cpSync('src/store/migrations', 'dist/store/migrations', { recursive: true });
cpSync('src/dashboard/assets', 'dist/dashboard/assets', { recursive: true });
cpSync('src/cli/templates', 'dist/cli/templates', { recursive: true });
