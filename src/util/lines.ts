// Splits bytes into lines without decoding them: LF or CRLF endings, blank lines skipped.
export function splitLines(body: Buffer): Buffer[] {
  const lines: Buffer[] = [];
  eachLine(body, (line) => lines.push(line));
  return lines;
}

/** The number (1-based, blank lines counted) of each line that splitLines(body) returns, in order. */
export function lineNumbers(body: Buffer): number[] {
  const numbers: number[] = [];
  eachLine(body, (_line, number) => numbers.push(number));
  return numbers;
}

function eachLine(body: Buffer, visit: (line: Buffer, number: number) => void): void {
  let start = 0;
  let number = 0;
  while (start < body.length) {
    let end = body.indexOf(0x0a, start);
    if (end === -1) end = body.length;
    number += 1;
    let last = end;
    if (last > start && body[last - 1] === 0x0d) last -= 1;
    if (last > start) visit(body.subarray(start, last), number);
    start = end + 1;
  }
}
