// The layering of the dashboard's DAG view (src/dashboard/assets/dag.js, plain JavaScript for the browser):
// a task sits one layer past the deepest of its `after`, a layer is ordered to follow its upstream tasks,
// and the rules that name a task's state become edges.
import { beforeAll, describe, expect, it } from 'vitest';

interface Task {
  name: string;
  after?: string[];
}
interface Rule {
  source: string;
  action: string;
  task: string;
  on: Record<string, unknown>;
}
interface DagModule {
  layers(tasks: readonly Task[]): string[][];
  ruleEdges(rules: readonly Rule[] | undefined): { from: string; to: string; labels: string[] }[];
}

const moduleUrl = new URL('../../src/dashboard/assets/dag.js', import.meta.url).href;
let dag: DagModule;

beforeAll(async () => {
  dag = (await import(moduleUrl)) as DagModule;
});

describe('layers', () => {
  it('puts a diamond in three layers', () => {
    expect(
      dag.layers([
        { name: 'a', after: [] },
        { name: 'b', after: ['a'] },
        { name: 'c', after: ['a'] },
        { name: 'd', after: ['b', 'c'] },
      ]),
    ).toEqual([['a'], ['b', 'c'], ['d']]);
  });

  it('places a task by its longest path from the roots, not its shortest', () => {
    // e follows a directly and through b → c: it goes past c.
    expect(
      dag.layers([
        { name: 'e', after: ['a', 'c'] },
        { name: 'c', after: ['b'] },
        { name: 'b', after: ['a'] },
        { name: 'a' },
      ]),
    ).toEqual([['a'], ['b'], ['c'], ['e']]);
  });

  it('keeps several roots and lone tasks in layer 0, in the order given', () => {
    expect(
      dag.layers([{ name: 'x' }, { name: 'y', after: [] }, { name: 'z', after: ['y'] }, { name: 'w' }]),
    ).toEqual([['x', 'y', 'w'], ['z']]);
  });

  it('orders a layer after the positions of its upstream tasks', () => {
    // Given order would cross the edges (p2 → q1, p1 → q2): the layer follows p1, p2 instead.
    expect(
      dag.layers([
        { name: 'p1' },
        { name: 'p2' },
        { name: 'q1', after: ['p2'] },
        { name: 'q2', after: ['p1'] },
      ]),
    ).toEqual([
      ['p1', 'p2'],
      ['q2', 'q1'],
    ]);
  });

  it('ignores unknown and self references, duplicates, and cuts a cycle instead of looping', () => {
    expect(
      dag.layers([
        { name: 'a', after: ['missing', 'a'] },
        { name: 'b', after: ['a'] },
        { name: 'b', after: [] },
      ]),
    ).toEqual([['a'], ['b']]);
    const cycle = dag.layers([
      { name: 'a', after: ['b'] },
      { name: 'b', after: ['a'] },
    ]);
    expect(cycle.flat().sort()).toEqual(['a', 'b']);
    expect(dag.layers([])).toEqual([]);
  });
});

describe('ruleEdges', () => {
  it('draws rules on task states, not those compiled from after, not key conditions, not self-rules', () => {
    const edges = dag.ruleEdges([
      { source: 'rules[0]', action: 'start', task: 'alert', on: { task: 'load', state: 'failed' } },
      {
        source: 'rules[1]',
        action: 'restart',
        task: 'load',
        on: { any: [{ task: 'extract', state: 'lost' }, { key: 'retry.*' }] },
      },
      { source: 'rules[2]', action: 'stop', task: 'load', on: { key: 'halt' } },
      { source: 'rules[3]', action: 'restart', task: 'load', on: { task: 'load', state: 'lost' } },
      {
        source: 'rules[4]',
        action: 'start',
        task: 'alert',
        on: { all: [{ task: 'load', state: 'stopped' }, { key: 'x' }] },
      },
      {
        source: 'tasks.load.after',
        action: 'start',
        task: 'load',
        on: { task: 'extract', state: 'succeeded' },
      },
    ]);
    expect(edges).toEqual([
      {
        from: 'load',
        to: 'alert',
        labels: ['rules[0]: start alert when load is failed', 'rules[4]: start alert when load is stopped'],
      },
      { from: 'extract', to: 'load', labels: ['rules[1]: restart load when extract is lost'] },
    ]);
    expect(dag.ruleEdges(undefined)).toEqual([]);
  });
});
