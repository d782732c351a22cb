// A TCP proxy for fault tests: it forwards 127.0.0.1:<port> to a real server and can black-hole the link, to
// simulate a network partition (no reset, no FIN: both ends keep a socket that looks alive and hears nothing),
// which is the failure that a crash or a refused connection does not exercise.
import net from 'node:net';

export interface TcpProxy {
  /** The port the proxy listens on, on 127.0.0.1. */
  readonly port: number;
  /**
   * Stops forwarding in both directions and silently drops the bytes of open connections, keeping their
   * sockets open (a partition, not a reset). New connections are accepted but held unanswered until
   * `restore()`, as a SYN would be retried across a short partition. Bytes dropped meanwhile are gone, so a
   * connection that lived through a black hole is usually unusable afterwards (as after a real long partition).
   */
  blackhole(): void;
  /** Forwards again; held connections are connected to the server now. */
  restore(): void;
  /** Destroys every connection and stops listening. */
  close(): Promise<void>;
}

export async function startTcpProxy(target: { host: string; port: number }): Promise<TcpProxy> {
  const sockets = new Set<net.Socket>();
  // Client sockets accepted during a black hole, waiting for restore() to be connected upstream.
  const held = new Set<net.Socket>();
  let blackholed = false;
  let closed = false;

  const track = (socket: net.Socket): void => {
    sockets.add(socket);
    socket.on('close', () => {
      sockets.delete(socket);
      held.delete(socket);
    });
    // A peer that goes away is normal here; without a listener the error would crash the test process.
    socket.on('error', () => socket.destroy());
  };

  /** Forwards `from` → `to` unless black-holed, with back-pressure so a slow side does not buffer without bound. */
  const forward = (from: net.Socket, to: net.Socket): void => {
    from.on('data', (chunk: Buffer) => {
      if (blackholed || to.destroyed) return;
      if (!to.write(chunk)) {
        from.pause();
        to.once('drain', () => from.resume());
      }
    });
    // Half-close and close travel across only while the link is up; in a partition the far side never learns.
    from.on('end', () => {
      if (!blackholed) to.end();
    });
    from.on('close', () => {
      if (!blackholed) to.destroy();
    });
  };

  const connectUpstream = (client: net.Socket): void => {
    const upstream = net.connect({ host: target.host, port: target.port });
    track(upstream);
    upstream.setNoDelay(true);
    forward(client, upstream);
    forward(upstream, client);
    client.resume();
  };

  const server = net.createServer({ pauseOnConnect: true }, (client) => {
    track(client);
    client.setNoDelay(true);
    if (closed) return void client.destroy();
    if (blackholed) {
      // Stays paused: what the client sends waits in the kernel until restore() or the client gives up.
      held.add(client);
      return;
    }
    connectUpstream(client);
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('tcp proxy: no port');

  return {
    port: address.port,
    blackhole() {
      blackholed = true;
    },
    restore() {
      blackholed = false;
      for (const client of held) {
        held.delete(client);
        if (!client.destroyed) connectUpstream(client);
      }
    },
    async close() {
      if (closed) return;
      closed = true;
      const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const socket of sockets) socket.destroy();
      await stopped;
    },
  };
}
