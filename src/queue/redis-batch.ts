// How a claimed Redis batch is kept: one string under its processing key, written by the CLAIM script with
// Redis's cmsgpack as two MessagePack arrays, the records' payloads (as strings of bytes) and their attempts
// (-1 once given back), and on a queue with ordering = "key" a third array with each record's key ('' for
// none). One value per batch costs Redis one allocation instead of one per record, and the
// claim returns it as one reply, whose payloads the consumer reads in place.

/** A claimed batch as CLAIM returns it: its payloads (views into the reply), their attempts and keys. */
export interface BatchValue {
  readonly payloads: Buffer[];
  readonly attempts: number[];
  /** Each record's key (undefined: none); absent when the batch was claimed without keys. */
  readonly keys?: Array<string | undefined>;
}

/**
 * Reads a batch value; TypeError when it is not two arrays of as many payloads and attempts, and possibly a
 * third of as many keys.
 */
export function openBatch(value: Buffer): BatchValue {
  const reader = new Reader(value);
  const payloads = new Array<Buffer>(reader.arrayHeader());
  for (let index = 0; index < payloads.length; index++) payloads[index] = reader.bytes();
  const attempts = new Array<number>(reader.arrayHeader());
  for (let index = 0; index < attempts.length; index++) attempts[index] = reader.integer();
  if (attempts.length !== payloads.length) throw new TypeError('malformed batch value');
  if (reader.offset === value.length) return { payloads, attempts };
  const keys = new Array<string | undefined>(reader.arrayHeader());
  for (let index = 0; index < keys.length; index++) {
    const key = reader.bytes();
    keys[index] = key.length === 0 ? undefined : key.toString();
  }
  if (keys.length !== payloads.length || reader.offset !== value.length)
    throw new TypeError('malformed batch value');
  return { payloads, attempts, keys };
}

/** The subset of MessagePack that cmsgpack writes for these arrays: array, str/bin and integer headers. */
class Reader {
  offset = 0;
  readonly #buffer: Buffer;

  constructor(buffer: Buffer) {
    this.#buffer = buffer;
  }

  arrayHeader(): number {
    const type = this.#byte();
    if (type >= 0x90 && type <= 0x9f) return type - 0x90;
    if (type === 0xdc) return this.#unsigned(2);
    if (type === 0xdd) return this.#unsigned(4);
    throw new TypeError(`malformed batch value: expected an array, got 0x${type.toString(16)}`);
  }

  bytes(): Buffer {
    const type = this.#byte();
    let length: number;
    if (type >= 0xa0 && type <= 0xbf) length = type - 0xa0;
    else if (type === 0xd9 || type === 0xc4) length = this.#unsigned(1);
    else if (type === 0xda || type === 0xc5) length = this.#unsigned(2);
    else if (type === 0xdb || type === 0xc6) length = this.#unsigned(4);
    else throw new TypeError(`malformed batch value: expected bytes, got 0x${type.toString(16)}`);
    const start = this.offset;
    this.offset += length;
    if (this.offset > this.#buffer.length) throw new TypeError('malformed batch value: truncated');
    return this.#buffer.subarray(start, this.offset);
  }

  integer(): number {
    const type = this.#byte();
    if (type <= 0x7f) return type;
    if (type >= 0xe0) return type - 0x100;
    switch (type) {
      case 0xcc:
        return this.#unsigned(1);
      case 0xcd:
        return this.#unsigned(2);
      case 0xce:
        return this.#unsigned(4);
      case 0xd0:
        return this.#signed(1);
      case 0xd1:
        return this.#signed(2);
      case 0xd2:
        return this.#signed(4);
      default:
        throw new TypeError(`malformed batch value: expected an integer, got 0x${type.toString(16)}`);
    }
  }

  #byte(): number {
    const value = this.#buffer[this.offset++];
    if (value === undefined) throw new TypeError('malformed batch value: truncated');
    return value;
  }

  #unsigned(size: 1 | 2 | 4): number {
    if (this.offset + size > this.#buffer.length) throw new TypeError('malformed batch value: truncated');
    const value = this.#buffer.readUIntBE(this.offset, size);
    this.offset += size;
    return value;
  }

  #signed(size: 1 | 2 | 4): number {
    if (this.offset + size > this.#buffer.length) throw new TypeError('malformed batch value: truncated');
    const value = this.#buffer.readIntBE(this.offset, size);
    this.offset += size;
    return value;
  }
}
