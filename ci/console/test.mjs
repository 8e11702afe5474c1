// The web console in a real browser: Debian's headless Chromium driven by
// playwright-core, against a cluster of three `mamba serve` processes on
// loopback. In the browser it creates a topic, produces a message, finds it
// in the message browser, sees a consumer group's lag and triggers a
// failover; it saves a screenshot of every page under SCREENSHOTS.
//
//   node ci/console/test.mjs        (from the repository root; ci/console.sh)
//
// Every wait is bounded; the brokers and the temporary directory go away
// even when a step fails.
import { chromium } from "playwright-core";
import { spawn } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync, createWriteStream, readFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const MAMBA = resolve(process.env.MAMBA_BIN || "target/debug/mamba");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const SCREENSHOTS = resolve(process.env.SCREENSHOTS || "target/console-screenshots");
const STEP_MS = 15_000;

function freePort() {
  return new Promise((done, fail) => {
    const server = createServer();
    server.once("error", fail);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => done(port));
    });
  });
}

/** Every broker started, killed at the end whatever happened. */
const children = [];

/** Starts one broker; resolves with its HTTP address once it is ready. */
function serve(args, log) {
  return new Promise((done, fail) => {
    const child = spawn(MAMBA, ["serve", ...args], { stdio: ["ignore", "ignore", "pipe"] });
    children.push(child);
    const out = createWriteStream(log);
    let seen = "";
    const timer = setTimeout(() => fail(new Error(`not ready in 30 s; see ${log}`)), 30_000);
    child.stderr.on("data", (chunk) => {
      out.write(chunk);
      seen += chunk.toString();
      const ready = seen.split("\n").find((line) => line.includes("mamba broker ready"));
      if (ready) {
        clearTimeout(timer);
        done({ child, http: `http://${/http=(\S+)/.exec(ready)[1]}` });
      }
    });
    child.once("exit", (code) => fail(new Error(`mamba serve exited (${code}); see ${log}`)));
  });
}

async function startCluster(dir, n) {
  const ports = [];
  for (let i = 0; i < 2 * n; i += 1) ports.push(await freePort());
  const voters = Array.from({ length: n }, (_, i) => `${i + 1}@127.0.0.1:${ports[2 * i + 1]}`).join(",");
  return Promise.all(Array.from({ length: n }, (_, i) => serve([
    "--node-id", String(i + 1), "--shards", "1",
    "--listen", `127.0.0.1:${ports[2 * i]}`, "--cluster-listen", `127.0.0.1:${ports[2 * i + 1]}`,
    "--http", "127.0.0.1:0", "--voters", voters,
    "--broker-heartbeat-interval-ms", "200", "--broker-session-timeout-ms", "2000",
    "--data-dir", join(dir, `broker-${i + 1}`),
  ], join(dir, `broker-${i + 1}.log`))));
}

async function json(url, options) {
  const response = await fetch(url, options);
  const text = await response.text();
  if (!response.ok) throw new Error(`${options?.method || "GET"} ${url}: ${response.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

/** Polls `check` until it is truthy, for at most STEP_MS. */
async function eventually(what, check) {
  const deadline = Date.now() + STEP_MS;
  let last;
  while (Date.now() < deadline) {
    try {
      last = await check();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`${what}: not within ${STEP_MS} ms (last: ${last})`);
}

async function main() {
  const dir = mkdtempSync(join(tmpdir(), "mamba-console-"));
  mkdirSync(SCREENSHOTS, { recursive: true });
  let brokers;
  let browser;
  try {
    brokers = await startCluster(dir, 3);
    const base = brokers[0].http;
    await eventually("three brokers alive", async () => {
      const c = await json(`${base}/v1/cluster`);
      return c.brokers.filter((b) => b.status === "alive").length === 3;
    });
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
    const page = await browser.newPage({ viewport: { width: 1366, height: 900 } });
    const problems = [];
    page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
    page.on("console", (m) => { if (m.type() === "error") problems.push(`console: ${m.text()}`); });
    page.on("request", (r) => { if (!r.url().startsWith(base)) problems.push(`request off the broker: ${r.url()}`); });
    page.setDefaultTimeout(STEP_MS);
    const shot = (name) => page.screenshot({ path: join(SCREENSHOTS, `${name}.png`), fullPage: true });

    // Overview.
    await page.goto(`${base}/`);
    await page.getByText("Brokers alive").waitFor();
    await page.locator("#health.ok").waitFor();

    // Topics: create one, replicated on all three.
    await page.click('a[data-page="topics"]');
    await page.fill('input[name="name"]', "console-orders");
    await page.fill('input[name="partitions"]', "2");
    await page.fill('input[name="replication_factor"]', "3");
    await page.click('button:has-text("Create topic")');
    await page.getByRole("heading", { name: "Topic console-orders" }).waitFor();
    await page.locator("text=Created topic console-orders").waitFor();
    await shot("topic");
    await page.click('a[data-page="topics"]');
    await page.locator('a:has-text("console-orders")').waitFor();
    await shot("topics");

    // Messages: produce one, find it, show it as JSON.
    await page.goto(`${base}/#/messages/console-orders`);
    await page.fill('input[name="key"]', "order-1");
    await page.fill('textarea[name="value"]', '{"item":"mamba","qty":2}');
    await page.fill('input[name="header"]', "source=console");
    await page.click('button:has-text("Produce to this partition")');
    await page.locator("text=Produced to partition 0 at offset 0").waitFor();
    await page.selectOption('select[name="as"]', "json");
    await page.locator("#records pre", { hasText: '"qty": 2' }).waitFor();
    await page.locator("#records .meta", { hasText: "key order-1" }).waitFor();
    await page.locator("#records .meta", { hasText: "headers source=console" }).waitFor();
    await page.selectOption('select[name="as"]', "hex");
    await page.locator("#records pre", { hasText: "7b 22 69 74" }).waitFor();
    await shot("messages");

    // A consumer group with lag (committed at 0, one record written).
    await json(`${base}/v1/groups/console-readers/offsets`, {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ topic: "console-orders", partitions: [0], to: 0 }),
    });
    await page.click('a[data-page="groups"]');
    await page.click('a:has-text("console-readers")');
    await page.locator("#total-lag", { hasText: "1" }).waitFor();
    await shot("group");
    await page.click('a[data-page="groups"]');
    await page.locator('a:has-text("console-readers")').waitFor();
    await shot("groups");

    // The cluster: fail over from the leader of partition 0.
    const topic = await json(`${base}/v1/topics/console-orders`);
    const leader = topic.partitions[0].leader;
    await page.click('a[data-page="cluster"]');
    await page.locator("text=Metadata quorum").waitFor();
    await page.selectOption('select[name="from"]', String(leader));
    await page.click('button:has-text("Failover")');
    await page.locator(`text=Failover from broker ${leader} asked`).waitFor();
    await eventually(`broker ${leader} leads nothing`, async () => {
      const c = await json(`${base}/v1/cluster`);
      return c.brokers.find((b) => b.node_id === leader).partitions_led === 0;
    });
    await page.reload();
    await page.locator("text=drained").first().waitFor();
    await shot("cluster");

    // Overview, with some traffic for its charts (sampled every 2 s).
    await page.click('a[data-page="overview"]');
    const records = Array.from({ length: 200 }, (_, i) => ({ value: `record ${i}` }));
    for (let i = 0; i < 6; i += 1) {
      await json(`${base}/v1/topics/console-orders/records`, {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(records),
      });
      await page.waitForTimeout(1000);
    }
    await shot("overview");

    if (problems.length) throw new Error(problems.join("\n"));
    console.log(`console test: ok; screenshots in ${SCREENSHOTS}`);
  } catch (e) {
    for (let i = 1; i <= 3; i += 1) {
      try {
        const log = readFileSync(join(dir, `broker-${i}.log`), "utf8");
        console.error(`--- broker-${i}.log (end)\n${log.slice(-3000)}`);
      } catch (_) { /* not started */ }
    }
    throw e;
  } finally {
    if (browser) await browser.close();
    for (const child of children) child.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  }
}

const deadline = setTimeout(() => { console.error("console test: over 3 minutes"); process.exit(1); }, 180_000);
main().then(() => { clearTimeout(deadline); process.exit(0); }, (e) => { console.error(e); process.exit(1); });
