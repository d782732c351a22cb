// Which format "auto" stands for: lines for people on a terminal, JSON anywhere else.
import { describe, expect, it } from 'vitest';

import { chooseLogFormat } from '../../src/log.js';

describe('chooseLogFormat', () => {
  it('picks pretty on a terminal and JSON elsewhere for "auto"', () => {
    expect(chooseLogFormat('auto', true)).toBe('pretty');
    expect(chooseLogFormat('auto', false)).toBe('json');
    expect(chooseLogFormat('auto', undefined)).toBe('json');
  });

  it('keeps a format chosen outright, terminal or not', () => {
    for (const isTTY of [true, false, undefined]) {
      expect(chooseLogFormat('json', isTTY)).toBe('json');
      expect(chooseLogFormat('pretty', isTTY)).toBe('pretty');
    }
  });
});
