// Network namespaces for partition tests and benchmarks: a namespace joined to the host by a veth pair with
// addresses of its own, commands run inside it, and a cut that drops every packet in the namespace with
// nftables (nothing is reset: both ends keep sockets that hear nothing), healed by deleting the table.
// Needs root, `ip` (iproute2) and `nft` (nftables). Names carry the creating process's pid, so that a later
// run removes what a crashed one left behind without touching a namespace whose process still runs.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** Prefix of every namespace made here: `<prefix><pid>-<random>`. */
export const NAMESPACE_PREFIX = 'baton-ns-';
/** The private range the veth pairs take their /30 subnets from. */
const SUBNET_BASE = [10, 213] as const;
/** The nft table of a cut, inside the namespace. */
const CUT_TABLE = 'baton_cut';

export interface Namespace {
  readonly name: string;
  /** The host's end of the veth pair: a server listening here is reached from inside the namespace. */
  readonly hostAddress: string;
  /** The namespace's end: a server inside it listening here is reached from the host. */
  readonly address: string;
  /** `command` run inside the namespace (`ip netns exec <name> …`), for spawn or execFile. */
  exec(command: readonly string[]): string[];
  /** Drops every packet in and out of the namespace but its loopback's (nft table `baton_cut`). */
  cut(): Promise<void>;
  /** Deletes the cut's table: packets flow again. */
  heal(): Promise<void>;
  /** Heals, kills what still runs inside, deletes the veth pair, then the namespace (its nft table goes too). */
  dispose(): Promise<void>;
}

/**
 * A fresh namespace with loopback up, a veth pair to the host on a free /30 of 10.213.0.0/16, and a default
 * route through the host's end (so it reaches every address of the host).
 */
export async function createNamespace(): Promise<Namespace> {
  const suffix = randomBytes(3).toString('hex');
  const name = `${NAMESPACE_PREFIX}${process.pid}-${suffix}`;
  const hostLink = hostLinkOf(name);
  const innerLink = `bvn${suffix}`;
  const [hostAddress, address] = await freeSubnet();
  await ip('netns', 'add', name);
  const namespace: Namespace = {
    name,
    hostAddress,
    address,
    exec: (command) => ['ip', 'netns', 'exec', name, ...command],
    cut: () => nftInside(name, cutRules()),
    heal: () => nftInside(name, `delete table inet ${CUT_TABLE}\n`),
    dispose: () => removeNamespace(name),
  };
  try {
    // Created with its peer already inside: no half-made pair is ever left on the host.
    await ip('link', 'add', hostLink, 'type', 'veth', 'peer', 'name', innerLink, 'netns', name);
    await ip('addr', 'add', `${hostAddress}/30`, 'dev', hostLink);
    await ip('link', 'set', hostLink, 'up');
    await ip('-n', name, 'addr', 'add', `${address}/30`, 'dev', innerLink);
    await ip('-n', name, 'link', 'set', innerLink, 'up');
    await ip('-n', name, 'link', 'set', 'lo', 'up');
    await ip('-n', name, 'route', 'add', 'default', 'via', hostAddress);
  } catch (error) {
    await namespace.dispose();
    throw error;
  }
  return namespace;
}

/**
 * Removes the namespaces of this module whose creating process is gone (a run that crashed or was killed
 * before its cleanup), with what runs inside them. Resolves the names removed.
 */
export async function removeLeftoverNamespaces(): Promise<string[]> {
  const { stdout } = await run('ip', ['netns', 'list']);
  const removed: string[] = [];
  for (const line of stdout.split('\n')) {
    const name = line.split(' ')[0] ?? '';
    if (!name.startsWith(NAMESPACE_PREFIX)) continue;
    const owner = Number(name.slice(NAMESPACE_PREFIX.length).split('-')[0]);
    if (owner === process.pid || isAlive(owner)) continue;
    await removeNamespace(name);
    removed.push(name);
  }
  return removed;
}

function cutRules(): string {
  // Drop, never reject: a partition answers nothing. Loopback stays, as a machine cut off still talks to itself.
  return `table inet ${CUT_TABLE} {
  chain input { type filter hook input priority -300; policy accept; iifname != "lo" drop; }
  chain output { type filter hook output priority -300; policy accept; oifname != "lo" drop; }
}
`;
}

async function nftInside(name: string, script: string): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const child = execFile('ip', ['netns', 'exec', name, 'nft', '-f', '-'], (error, _stdout, stderr) =>
      error ? reject(new Error(`nft in ${name}: ${stderr || error.message}`)) : resolve(),
    );
    child.stdin?.end(script);
  });
}

/** The host's end of a namespace's veth pair (interface names have at most 15 bytes). */
function hostLinkOf(name: string): string {
  return `bvh${name.split('-').at(-1) ?? ''}`;
}

async function removeNamespace(name: string): Promise<void> {
  // Healed first, so that what was cut can close its connections instead of retrying into the void.
  await nftInside(name, `delete table inet ${CUT_TABLE}\n`).catch(() => undefined);
  const pids = await run('ip', ['netns', 'pids', name]).then(
    ({ stdout }) => stdout.split('\n').filter(Boolean).map(Number),
    () => [],
  );
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Gone already.
    }
  }
  // Deleting one end deletes the pair at once; the namespace itself may linger in the kernel while
  // sockets of its processes are closing, so its veth is not left to go with it.
  await run('ip', ['link', 'del', hostLinkOf(name)]).catch(() => undefined);
  await run('ip', ['netns', 'del', name]).catch(() => undefined);
}

/** Two addresses of a /30 that no interface of the host uses: [host's end, namespace's end]. */
async function freeSubnet(): Promise<[string, string]> {
  const { stdout } = await run('ip', ['-o', '-4', 'addr', 'show']);
  const prefix = `${SUBNET_BASE.join('.')}.`;
  for (let tries = 0; tries < 100; tries++) {
    const third = randomBytes(1)[0] ?? 0;
    const block = ((randomBytes(1)[0] ?? 0) % 64) * 4;
    const base = `${prefix}${third}.`;
    const taken = [0, 1, 2, 3].some((offset) => stdout.includes(` ${base}${block + offset}/`));
    if (!taken) return [`${base}${block + 1}`, `${base}${block + 2}`];
  }
  throw new Error(`no free /30 left in ${prefix}0.0/16`);
}

function isAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function ip(...args: string[]): Promise<void> {
  await run('ip', args);
}
