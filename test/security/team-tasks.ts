// Tasks of two teams for the security tests: task `a` in namespace team-a and `b` in team-b, each started by
// an event with key `go` in its namespace, and running long enough to be listed and stopped.
import { defineConfig } from '../../src/index.js';

export const TEAM_TASKS = defineConfig({
  tasks: {
    a: { command: 'sleep 30', namespace: 'team-a' },
    b: { command: 'sleep 30', namespace: 'team-b' },
  },
  rules: [
    { on: { namespace: 'team-a', key: 'go' }, action: 'start', task: 'a' },
    { on: { namespace: 'team-b', key: 'go' }, action: 'start', task: 'b' },
  ],
});
