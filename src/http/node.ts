// What the HTTP API needs of a node: the admin operations plus ingest and health.
import type { Admin } from '../node/admin.js';
import type { IngestResult } from '../queue/ingest.js';

export interface HttpNode extends Admin {
  readonly name: string;
  readonly state: string;
  readonly queueNames: readonly string[];
  ingest(queue: string, records: readonly Buffer[]): Promise<IngestResult>;
  ready(): Promise<boolean>;
}
