// notes: a numbered to-do list in a Hightower namespace, over the store's
// own interface `hightower:kv/store` (world `hightower:kv/command`).
//
// Usage (after `hightower run notes.wasm --namespace app/`):
//
//   add TEXT...   store a note under the next number; prints the number
//   list          every note, in number order: "NUMBER: TEXT"
//   done NUMBER   remove a note (exit status 1 if there is none)
//
// Numbers are handed out with a conditional batch: the counter `next` and
// the note are written together only if `next` is still at the version
// read, so two concurrent `add`s can never get the same number.

import { getArguments } from 'wasi:cli/environment@0.2.12';
import { granted, Namespace } from 'hightower:kv/store@0.1.0';

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const bytes = (text) => encoder.encode(text);
const text = (data) => decoder.decode(data);
// Fixed width, so that the store's byte order is number order.
const noteKey = (n) => bytes(`notes/${String(n).padStart(10, '0')}`);

class Usage extends Error {}

/// A `hightower:kv` error variant, as text.
function describe(err) {
  const e = err.payload ?? err;
  if (e && typeof e === 'object' && 'tag' in e) {
    return e.val === undefined ? e.tag : `${e.tag}: ${text(e.val) || e.val}`;
  }
  return String(err);
}

function add(ns, words) {
  if (words.length === 0) throw new Usage();
  for (;;) {
    const next = ns.get(bytes('next'));
    const n = next ? Number(text(next.value)) : 1;
    const guard = next
      ? { tag: 'version-is', val: { key: bytes('next'), version: next.version } }
      : { tag: 'absent', val: bytes('next') };
    try {
      ns.batch([guard], [
        { tag: 'set', val: { key: bytes('next'), value: bytes(String(n + 1)) } },
        { tag: 'set', val: { key: noteKey(n), value: bytes(words.join(' ')) } },
      ]);
      return n;
    } catch (err) {
      // Someone else took this number: read again and retry.
      if (err.payload?.tag !== 'condition-failed') throw err;
    }
  }
}

function list(ns) {
  let cursor;
  do {
    const page = ns.listKeys(bytes('notes/'), cursor, 0);
    for (const key of page.keys) {
      const entry = ns.get(key);
      if (entry) console.log(`${Number(text(key).slice(6))}: ${text(entry.value)}`);
    }
    cursor = page.nextCursor;
  } while (cursor !== undefined);
}

export const run = {
  run() {
    const [command, ...rest] = getArguments().slice(1);
    try {
      const ns = Namespace.open(granted()[0]);
      if (command === 'add') {
        console.log(add(ns, rest));
      } else if (command === 'list' && rest.length === 0) {
        list(ns);
      } else if (command === 'done' && rest.length === 1 && /^[0-9]+$/.test(rest[0])) {
        if (ns.delete(noteKey(Number(rest[0]))) === undefined) {
          console.error(`notes: no note ${rest[0]}`);
          throw new Error('not found');
        }
      } else {
        throw new Usage();
      }
    } catch (err) {
      if (err instanceof Usage) console.error('usage: notes add TEXT... | list | done NUMBER');
      else if (err.message !== 'not found') console.error(`notes: ${describe(err)}`);
      // An exception makes `run` return an error: exit status 1.
      throw err;
    }
  },
};
