// Components on the wire (GET /v1/components, the dashboard): name, where it runs, state, restarts.
import type { ComponentStatus } from './supervisor.js';

export function componentJson(component: ComponentStatus): Record<string, unknown> {
  return {
    name: component.name,
    run_on: component.runOn,
    state: component.state,
    restarts: component.restarts,
    last_error: component.lastError ?? null,
  };
}
