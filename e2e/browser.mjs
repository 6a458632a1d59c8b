// Headless Chromium kept off the network (flags from the issue and ../shared/WEB.md), and a
// sampler of its memory.
import { chromium } from 'playwright-core';
import { execFileSync } from 'node:child_process';

const options = () => ({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
         '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'],
});

export const launch = () => chromium.launch(options());

// A browser with a profile on disk: the origin private file system then lives on disk, as in a
// user's browser (an incognito-like context keeps it in memory).
export const launchPersistent = (profile) =>
  chromium.launchPersistentContext(profile, { ...options(), acceptDownloads: true });

// Resident memory of every process under this node process (Chromium's browser, renderers,
// GPU and utility processes), in bytes: the sum and the largest one.
export function browserMemory() {
  const rows = execFileSync('ps', ['-e', '-o', 'pid=,ppid=,rss='], { encoding: 'utf8' })
    .trim().split('\n').map((l) => l.trim().split(/\s+/).map(Number));
  const children = new Map();
  for (const [pid, ppid] of rows) children.set(ppid, [...(children.get(ppid) ?? []), pid]);
  const rss = new Map(rows.map(([pid, , kb]) => [pid, kb * 1024]));
  let sum = 0, largest = 0;
  const stack = [...(children.get(process.pid) ?? [])];
  while (stack.length) {
    const pid = stack.pop();
    sum += rss.get(pid) ?? 0;
    largest = Math.max(largest, rss.get(pid) ?? 0);
    stack.push(...(children.get(pid) ?? []));
  }
  return { sum, largest };
}

// Sample browserMemory() every `ms` until stop() is called; stop() returns the peaks.
export function sampleMemory(ms = 100) {
  const peak = { sum: 0, largest: 0 };
  const take = () => {
    const m = browserMemory();
    peak.sum = Math.max(peak.sum, m.sum);
    peak.largest = Math.max(peak.largest, m.largest);
  };
  take();
  const timer = setInterval(take, ms);
  return { stop: () => { clearInterval(timer); take(); return peak; } };
}
