// defineWorkflow(): a workflow written in TypeScript, with its tasks' functions typed. The definition has
// the shape of a [workflows.<name>] table (snake_case keys); a module exports it as its default for
// `[workflows.<name>] module = "./etl.ts"`, or a config written in code puts it under `workflows`.
import type { WorkflowInput } from '../config/schema.js';
import type { TaskContext } from './process.js';

type TaskInput = NonNullable<WorkflowInput['tasks']>[string];

/** A task of a workflow defined in code: a command, a module, or a function run in the node's process. */
export type WorkflowTaskDefinition = Omit<TaskInput, 'run'> & {
  run?: ((ctx: TaskContext) => unknown) | undefined;
};

export type WorkflowDefinition = Omit<WorkflowInput, 'module' | 'tasks'> & {
  tasks: Record<string, WorkflowTaskDefinition>;
};

/** Returns `definition` as it is: it gives a workflow written in code its type. */
export function defineWorkflow(definition: WorkflowDefinition): WorkflowDefinition {
  return definition;
}
