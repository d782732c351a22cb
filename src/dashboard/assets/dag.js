// One workflow execution drawn as its DAG: the tasks in layers (a task's layer is the longest path to it
// from a task with no `after`), left to right, each a box coloured by the state of its latest run; solid
// edges for `after`, dashed ones for rules whose condition names another task's state. Built with DOM
// calls alone: names and states are set as text and attributes, never parsed as markup.

const SVG = 'http://www.w3.org/2000/svg';
/** The states a box may be coloured by; anything else is drawn as "other". */
const STATES = new Set(['pending', 'running', 'succeeded', 'failed', 'stopped', 'lost']);
const BOX_HEIGHT = 42;
const ROW_GAP = 16;
const COLUMN_GAP = 56;
const MARGIN = 12;
/** Names longer than this are cut in the box (the whole name is in its tooltip). */
const NAME_SHOWN = 32;
/** Width of one character of a box's name, roughly, at the box's font size. */
const CHAR_WIDTH = 7.4;

/**
 * The tasks in layers: layer 0 holds the tasks with no `after` (among the tasks given), every other task
 * sits one layer past the deepest of its `after`. Within a layer, tasks follow the mean position of their
 * `after` in the layers before (fewer crossings), then the order given. `after` naming a task not given
 * is ignored, and a cycle (which the config refuses) is cut rather than followed.
 */
export function layers(tasks) {
  const byName = new Map();
  for (const task of tasks) if (!byName.has(task.name)) byName.set(task.name, task);
  const depth = new Map();
  const visiting = new Set();
  const depthOf = (name) => {
    if (depth.has(name)) return depth.get(name);
    if (visiting.has(name)) return 0;
    visiting.add(name);
    let deepest = 0;
    for (const upstream of byName.get(name).after ?? []) {
      if (byName.has(upstream) && upstream !== name) deepest = Math.max(deepest, depthOf(upstream) + 1);
    }
    visiting.delete(name);
    depth.set(name, deepest);
    return deepest;
  };
  const result = [];
  for (const name of byName.keys()) (result[depthOf(name)] ??= []).push(name);
  const position = new Map();
  const order = [...byName.keys()];
  for (const [index, layer] of result.entries()) {
    if (!layer) {
      result[index] = [];
      continue;
    }
    const weight = (name) => {
      const placed = (byName.get(name).after ?? []).filter((upstream) => position.has(upstream));
      return placed.length === 0
        ? Number.POSITIVE_INFINITY
        : placed.reduce((sum, upstream) => sum + position.get(upstream), 0) / placed.length;
    };
    if (index > 0) {
      layer.sort((a, b) => weight(a) - weight(b) || order.indexOf(a) - order.indexOf(b));
    }
    layer.forEach((name, at) => position.set(name, at));
  }
  return result;
}

/**
 * The edges of a workflow's own rules (`rules[i]`, not those compiled from `after`) whose condition names a
 * task's state: one edge from that task to the rule's task, once per pair; a rule on its own task is left out.
 */
export function ruleEdges(rules) {
  const edges = new Map();
  for (const rule of rules ?? []) {
    if (!String(rule.source ?? '').startsWith('rules[')) continue;
    const leaves = rule.on?.all ?? rule.on?.any ?? [rule.on];
    for (const leaf of leaves) {
      if (typeof leaf?.task !== 'string' || leaf.task === rule.task) continue;
      const key = JSON.stringify([leaf.task, rule.task]);
      const label = `${rule.source}: ${rule.action} ${rule.task} when ${leaf.task} is ${leaf.state}`;
      const edge = edges.get(key);
      if (edge) edge.labels.push(label);
      else edges.set(key, { from: leaf.task, to: rule.task, labels: [label] });
    }
  }
  return [...edges.values()];
}

function element(name, attributes = {}, text) {
  const node = document.createElementNS(SVG, name);
  for (const [attribute, value] of Object.entries(attributes)) node.setAttribute(attribute, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

const shown = (name) => (name.length > NAME_SHOWN ? `${name.slice(0, NAME_SHOWN - 1)}…` : name);

/**
 * Draws the DAG into `svg` (its children are replaced). `tasks`: { name, after, state (null: not started),
 * runs (how many runs it had) }; `rules`: edges from ruleEdges().
 */
export function drawDag(svg, tasks, rules = []) {
  const grid = layers(tasks);
  const byName = new Map(tasks.map((task) => [task.name, task]));
  const stateLine = (task) => `${task.state ?? 'not started'}${task.runs > 1 ? ` · ${task.runs} runs` : ''}`;
  const tallest = Math.max(1, ...grid.map((layer) => layer.length));
  const boxes = new Map();
  let x = MARGIN;
  for (const layer of grid) {
    const longest = Math.max(
      ...layer.map((name) => Math.max(shown(name).length, stateLine(byName.get(name)).length)),
    );
    const width = Math.round(longest * CHAR_WIDTH + 24);
    const top = MARGIN + ((tallest - layer.length) * (BOX_HEIGHT + ROW_GAP)) / 2;
    layer.forEach((name, at) => {
      boxes.set(name, { x, y: top + at * (BOX_HEIGHT + ROW_GAP), width });
    });
    x += width + COLUMN_GAP;
  }
  const width = Math.max(x - COLUMN_GAP + MARGIN, 2 * MARGIN);
  const bottom = tallest * (BOX_HEIGHT + ROW_GAP) - ROW_GAP + MARGIN;
  let height = bottom + MARGIN;

  const marker = element('marker', {
    id: 'dag-arrow',
    viewBox: '0 0 10 10',
    refX: 10,
    refY: 5,
    markerWidth: 7,
    markerHeight: 7,
    orient: 'auto-start-reverse',
  });
  marker.append(element('path', { d: 'M0,0 L10,5 L0,10 z', class: 'arrow' }));
  const defs = element('defs');
  defs.append(marker);

  const edges = element('g', { class: 'edges' });
  const connect = (from, to, kind, title) => {
    const a = boxes.get(from);
    const b = boxes.get(to);
    if (!a || !b) return;
    let d;
    if (b.x > a.x) {
      const [x1, y1, x2, y2] = [a.x + a.width, a.y + BOX_HEIGHT / 2, b.x, b.y + BOX_HEIGHT / 2];
      const bend = (x2 - x1) / 2;
      d = `M${x1},${y1} C${x1 + bend},${y1} ${x2 - bend},${y2} ${x2},${y2}`;
    } else if (b.x === a.x) {
      // Within a layer: out of the right side and back into it, bulging into the gap after the layer.
      const [x1, y1, y2] = [a.x + a.width, a.y + BOX_HEIGHT / 2, b.y + BOX_HEIGHT / 2];
      const bulge = x1 + COLUMN_GAP * 0.6;
      d = `M${x1},${y1} C${bulge},${y1} ${bulge},${y2} ${x1},${y2}`;
    } else {
      // Back to an earlier layer: around under all the boxes, from bottom to bottom.
      const [x1, y1, x2, y2] = [a.x + a.width / 2, a.y + BOX_HEIGHT, b.x + b.width / 2, b.y + BOX_HEIGHT];
      const drop = bottom + ROW_GAP * 1.5;
      height = Math.max(height, bottom + ROW_GAP + MARGIN);
      d = `M${x1},${y1} C${x1},${drop} ${x2},${drop} ${x2},${y2}`;
    }
    const path = element('path', { d, class: `edge ${kind}`, 'marker-end': 'url(#dag-arrow)' });
    path.dataset.from = from;
    path.dataset.to = to;
    path.dataset.kind = kind;
    path.append(element('title', {}, title));
    edges.append(path);
  };
  for (const task of tasks) {
    for (const upstream of new Set(task.after ?? [])) {
      connect(upstream, task.name, 'after', `${task.name} runs after ${upstream} succeeded`);
    }
  }
  for (const edge of rules) connect(edge.from, edge.to, 'rule', edge.labels.join('\n'));
  svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
  svg.setAttribute('width', String(width));
  svg.setAttribute('height', String(height));

  const nodes = element('g', { class: 'tasks' });
  for (const [name, box] of boxes) {
    const task = byName.get(name);
    const state = task.state ?? null;
    const group = element('g', {
      class: `task state-${state === null ? 'none' : STATES.has(state) ? state : 'other'}`,
      transform: `translate(${box.x},${box.y})`,
    });
    group.dataset.task = name;
    group.dataset.state = state ?? 'not started';
    group.append(
      element('title', {}, `${name}: ${stateLine(task)}`),
      element('rect', { width: box.width, height: BOX_HEIGHT, rx: 5 }),
      element('text', { x: 10, y: 17, class: 'name' }, shown(name)),
      element('text', { x: 10, y: 33, class: 'state' }, stateLine(task)),
    );
    nodes.append(group);
  }
  svg.replaceChildren(defs, edges, nodes);
}
