// Which rules an event fires: a rule matches an event of its namespace with its key (`*` matches any run of
// characters) and, when the rule names one, its exact value. Pure, so the rule engine and its tests agree on
// what fires.
import type { RuleConfig } from '../config/types.js';
import type { StoredEvent } from '../events/types.js';
import { keyMatches } from './conditions.js';

/** One rule fired by one event. */
export interface RuleMatch {
  readonly rule: RuleConfig;
  readonly event: StoredEvent;
}

export function ruleMatches(rule: RuleConfig, event: StoredEvent): boolean {
  return (
    rule.on.namespace === event.namespace &&
    keyMatches(rule.on.key, event.key) &&
    (rule.on.value === undefined || rule.on.value === event.value)
  );
}

/** The rules fired by `events`, in offset order and, for one event, in [[rules]] order. */
export function matchRules(rules: readonly RuleConfig[], events: readonly StoredEvent[]): RuleMatch[] {
  return events.flatMap((event) =>
    rules.filter((rule) => ruleMatches(rule, event)).map((rule) => ({ rule, event })),
  );
}
