// A value given once for all the records of a publish, or once per record.

/** One value for every record of a publish, or one per record (undefined: none for that record). */
export type PerRecord<T> = T | readonly (T | undefined)[];

/** The value of the record at `index`. */
export function valueAt<T>(values: PerRecord<T> | undefined, index: number): T | undefined {
  if (values === undefined) return undefined;
  return Array.isArray(values) ? (values as readonly (T | undefined)[])[index] : (values as T);
}

/** Whether any record of the publish has a value. */
export function anyValue<T>(values: PerRecord<T> | undefined): boolean {
  if (values === undefined) return false;
  return Array.isArray(values) ? values.some((value) => value !== undefined) : true;
}

/** The per-record values as one list as long as the records (undefined where none). */
export function valueList<T>(values: PerRecord<T> | undefined, count: number): (T | undefined)[] {
  return Array.from({ length: count }, (_, index) => valueAt(values, index));
}
