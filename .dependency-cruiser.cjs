// The shape of src/ as a lint gate: layers from the bottom up, where a module imports its own folder, the lower
// layers and, in its own layer, only the one-way neighbours of SAME_LAYER; so no folder cycle can form, and no
// module cycle is allowed either. docs/architecture.md explains the layers; `npm run lint` runs this check.
'use strict';

/**
 * Bottom to top: [name, parts]. A part is a folder (ending in '/') or a file directly under src/.
 * @type {Array<[string, string[]]>}
 */
const LAYERS = [
  ['foundation', ['errors.ts', 'log.ts', 'util/']],
  ['config', ['config/']],
  ['drivers', ['store/', 'redis/']],
  ['capabilities', ['handler/', 'cluster/', 'events/', 'components/']],
  ['composed capabilities', ['queue/', 'tasks/', 'schedules/']],
  ['middle', ['metrics/', 'admin/']],
  ['edge', ['http/', 'dashboard/']],
  ['composition root', ['node/']],
  ['entry points', ['cli/', 'index.ts']],
];

/**
 * The only imports between parts of one layer, [from, to]; one direction each, so no cycle can form.
 * @type {Array<[string, string]>}
 */
const SAME_LAYER = [
  ['util/', 'errors.ts'], // helpers throw and log the project's errors
  ['util/', 'log.ts'],
  ['components/', 'cluster/'], // a component says which Role it runs on
  ['events/', 'components/'], // event retention runs as a Component
  ['schedules/', 'queue/'], // a tick enqueues its record in its own transaction
  ['schedules/', 'tasks/'], // a tick creates a task run in its own transaction
];

/** @param {string[]} parts */
const pattern = (parts) =>
  `^src/(${parts.map((part) => part.replace(/\./g, '\\.') + (part.endsWith('/') ? '' : '$')).join('|')})`;

/** A rule name per part: 'upward-from-queue', 'same-layer-from-errors.ts'. @param {string} part */
const name = (part) => part.replace(/\/$/, '');

const layered = pattern(LAYERS.flatMap(([, parts]) => parts));

const rules = [
  {
    name: 'no-circular',
    comment: 'Modules of src/ import each other in a cycle (type-only imports count).',
    severity: 'error',
    from: { path: '^src/' },
    to: { circular: true },
  },
  {
    name: 'not-in-a-layer',
    comment: 'This module of src/ is in no layer: add its folder to LAYERS in .dependency-cruiser.cjs.',
    severity: 'error',
    from: { path: '^src/', pathNot: layered },
    to: {},
  },
  {
    name: 'not-in-a-layer-orphan',
    comment: 'This module of src/ is in no layer and imports nothing: add its folder to LAYERS.',
    severity: 'error',
    from: { orphan: true, path: '^src/', pathNot: layered },
    to: {},
  },
];

LAYERS.forEach(([layer, parts], index) => {
  const higher = LAYERS.slice(index + 1).flatMap(([, above]) => above);
  for (const part of parts) {
    if (higher.length > 0) {
      rules.push({
        name: `upward-from-${name(part)}`,
        comment: `src/${part} is in layer ${index + 1} (${layer}): it may import layers 1-${index + 1} only.`,
        severity: 'error',
        from: { path: pattern([part]) },
        to: { path: pattern(higher) },
      });
    }
    const allowed = SAME_LAYER.filter(([from]) => from === part).map(([, to]) => to);
    const forbidden = parts.filter((other) => other !== part && !allowed.includes(other));
    if (forbidden.length > 0) {
      rules.push({
        name: `same-layer-from-${name(part)}`,
        comment: `src/${part} may not import ${forbidden.map((other) => `src/${other}`).join(', ')}: same layer (${layer}), not in SAME_LAYER.`,
        severity: 'error',
        from: { path: pattern([part]) },
        to: { path: pattern(forbidden) },
      });
    }
  }
});

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: rules,
  options: {
    includeOnly: '^src/',
    // Type-only imports count: the layers are about what a module knows, not what runs.
    tsPreCompilationDeps: true,
    // Sources import './x.js' (NodeNext); resolution falls back to './x.ts' as tsc does.
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { extensions: ['.ts', '.js'] },
    progress: { type: 'none' },
  },
};
