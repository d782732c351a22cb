// Which rules an event fires: namespace and key exactly, and the value when the rule names one.
import { describe, expect, it } from 'vitest';

import type { RuleConfig } from '../../src/config/types.js';
import type { StoredEvent } from '../../src/events/types.js';
import { matchRules } from '../../src/tasks/rules.js';

const rule = (index: number, on: RuleConfig['on'], task = 't'): RuleConfig => ({
  index,
  on,
  action: 'start',
  task,
  onLost: 'mark',
});
const event = (
  offset: number,
  key: string,
  namespace = 'default',
  value: string | null = null,
): StoredEvent => ({
  offset,
  key,
  namespace,
  value,
  context: null,
  sender: null,
  createTime: 0,
});

describe('matchRules', () => {
  it('matches namespace and key exactly, and the value only when the rule names one', () => {
    const rules = [
      rule(0, { namespace: 'default', key: 'a', value: undefined }),
      rule(1, { namespace: 'jobs', key: 'a', value: undefined }),
      rule(2, { namespace: 'default', key: 'a', value: 'yes' }),
    ];
    const matches = matchRules(rules, [
      event(1, 'a'),
      event(2, 'a', 'default', 'yes'),
      event(3, 'a', 'jobs'),
      event(4, 'a.b'),
    ]);
    expect(matches.map((match) => [match.event.offset, match.rule.index])).toEqual([
      [1, 0],
      [2, 0],
      [2, 2],
      [3, 1],
    ]);
  });
});
