// Browser test of the /docs page: a real medops-api on loopback, Debian's
// chromium driven by playwright-core. It loads /docs, lists the task routes
// Swagger UI rendered from /openapi.json, types the token into Authorize,
// creates a task with try-it-out and finds that task through the API.
// Run it with `make test-browser` (hack/browser/run.sh builds medops-api and
// passes MEDOPS_API_BIN).
import { spawn } from "node:child_process";
import { mkdtempSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { once } from "node:events";
import { createInterface } from "node:readline";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

const bin = process.env.MEDOPS_API_BIN;
const chromiumPath = process.env.MEDOPS_CHROMIUM || "/usr/bin/chromium";
assert.ok(bin, "MEDOPS_API_BIN must name a medops-api binary");

const token = "browser-test-" + Math.random().toString(36).slice(2);
const title = "Restock gloves from the docs page " + Date.now();

// Starts medops-api on a free loopback port and resolves to its base URL,
// read from the one line it prints on stdout.
async function startAPI(dir) {
  const tokenFile = join(dir, "token");
  writeFileSync(tokenFile, token + "\n", { mode: 0o600 });
  const config = join(dir, "config.yaml");
  writeFileSync(config, [
    "listen: 127.0.0.1:0",
    `dataDir: ${join(dir, "data")}`,
    "auth:",
    `  tokenFile: ${tokenFile}`,
    "server:",
    "  shutdownDelay: 0s",
    "",
  ].join("\n"));
  const proc = spawn(bin, ["--config", config], { stdio: ["ignore", "pipe", "pipe"] });
  // Its access log is shown only when the test fails.
  proc.log = [];
  proc.stderr.on("data", (b) => proc.log.push(b));
  const lines = createInterface({ input: proc.stdout });
  const exited = once(proc, "exit").then(([code]) => { throw new Error(`medops-api exited with ${code}`); });
  const listening = (async () => {
    for await (const line of lines) {
      const m = line.match(/listening on (\S+)/);
      if (m) return `http://${m[1]}`;
    }
    throw new Error("medops-api closed stdout without printing its address");
  })();
  return { proc, base: await Promise.race([listening, exited]) };
}

async function main() {
  const dir = mkdtempSync(join(tmpdir(), "medops-browser-"));
  const { proc, base } = await startAPI(dir);
  let passed = false;
  const browser = await chromium.launch({
    executablePath: chromiumPath,
    // Root in a container has no user namespaces for chromium's sandbox.
    args: ["--no-sandbox"],
  });
  try {
    const page = await browser.newPage();
    const problems = [];
    page.on("console", (msg) => {
      if (msg.type() === "error") problems.push(`console: ${msg.text()}`);
    });
    page.on("pageerror", (err) => problems.push(`page error: ${err.message}`));
    // Nothing may leave loopback: the page must work offline.
    page.on("request", (req) => {
      if (!req.url().startsWith(base) && !req.url().startsWith("data:")) problems.push(`outside request: ${req.url()}`);
    });
    const posts = [];
    page.on("request", (req) => {
      if (req.method() === "POST") posts.push(req);
    });

    await page.goto(`${base}/docs`);
    await page.locator(".opblock").first().waitFor();

    // The task routes, as Swagger UI lists them.
    const ops = await page.locator(".opblock").evaluateAll((els) => els.map((el) =>
      `${el.querySelector(".opblock-summary-method").textContent.trim()} ${el.querySelector(".opblock-summary-path").getAttribute("data-path")}`));
    console.log("routes on /docs:", ops.join(", "));
    for (const want of ["GET /api/v1/tasks", "POST /api/v1/tasks", "GET /api/v1/tasks/{id}",
      "PATCH /api/v1/tasks/{id}", "DELETE /api/v1/tasks/{id}"]) {
      assert.ok(ops.includes(want), `/docs does not list ${want}`);
    }

    // Authorize with the bearer token.
    await page.locator("button.authorize").first().click();
    const modal = page.locator(".modal-ux");
    await modal.locator("input").first().fill(token);
    await modal.locator("button.authorize").click();
    await modal.locator("button.btn-done").click();

    // Create a task with try-it-out.
    const create = page.locator(".opblock-post").filter({ has: page.locator('[data-path="/api/v1/tasks"]') });
    await create.locator(".opblock-summary").click();
    await create.locator("button.try-out__btn").click();
    await create.locator("textarea.body-param__text").fill(JSON.stringify({ title, priority: "high" }));
    await create.locator("button.execute").click();
    const status = create.locator(".live-responses-table .response .response-col_status").first();
    await status.waitFor();
    const shown = (await status.textContent()).trim();
    const body = (await create.locator(".live-responses-table .response-col_description pre").first().textContent()).trim();
    assert.equal(shown, "201", `try-it-out answered ${shown}: ${body}`);

    const post = posts.find((r) => r.url() === `${base}/api/v1/tasks`);
    assert.ok(post, "the page sent no POST /api/v1/tasks");
    assert.equal(post.headers()["authorization"], `Bearer ${token}`, "the page did not send the typed token");

    // Find the task through the API, not through the page.
    const id = JSON.parse(body).id;
    const res = await fetch(`${base}/api/v1/tasks/${id}`, { headers: { Authorization: `Bearer ${token}` } });
    assert.equal(res.status, 200, `GET /api/v1/tasks/${id}: ${res.status}`);
    const task = await res.json();
    assert.equal(task.title, title);
    assert.equal(task.priority, "high");
    const list = await (await fetch(`${base}/api/v1/tasks?priority=high`, { headers: { Authorization: `Bearer ${token}` } })).json();
    assert.ok(list.items.some((t) => t.id === id && t.title === title), "the task is not in the list");

    assert.deepEqual(problems, [], "the page logged errors, broke its CSP or left loopback");
    passed = true;
    console.log(`browser test passed: task ${id} created from /docs and read through the API`);
  } finally {
    await browser.close();
    proc.kill("SIGTERM");
    await once(proc, "exit");
    if (!passed) process.stderr.write("medops-api log:\n" + Buffer.concat(proc.log).toString());
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
