// The extension's settings reach the server (docs/editors.md, "VS Code"): extension.js's client
// options, with vscode-languageclient's own configuration features (the code that answers the
// server's workspace/configuration and sends workspace/didChangeConfiguration in VS Code), over
// a real `dlc lsp`. VS Code itself does not run here: its `vscode` module is replaced by one that
// holds the settings as VS Code does (package.json's defaults, under the user's), and fires its
// change event when a setting is changed. Run with `node --test test/` (npm test); the server's
// command is the setting dlc.command, here from DLC_LSP_COMMAND (a JSON list) when it is set.
"use strict";
const test = require("node:test");
const assert = require("node:assert");
const Module = require("node:module");
const path = require("node:path");
const fs = require("node:fs");
const { spawn } = require("node:child_process");

const manifest = require("../package.json");
const user = {};                // settings.json: "dlc.inlayHints": false, ...
const listeners = [];

function sectionValues() {
  const values = {};
  for (const [key, property] of Object.entries(manifest.contributes.configuration.properties)) {
    values[key.slice("dlc.".length)] = key in user ? user[key] : property.default;
  }
  return values;
}

// vscode.workspace.getConfiguration: an object whose own properties are the section's values, with get and has
function getConfiguration(section) {
  const scope = section === undefined ? { dlc: sectionValues() } : section === "dlc" ? sectionValues() : {};
  const methods = { get: (key, fallback) => (key in scope ? scope[key] : fallback), has: (key) => key in scope };
  return Object.assign(Object.create(methods), scope);
}

function changeSetting(key, value) {
  user[key] = value;
  const event = { affectsConfiguration: (section) => key === section || key.startsWith(section + ".") };
  for (const listener of listeners) listener(event);
}

// the `vscode` module: the workspace's configuration; any other name a class of nothing, which
// the modules of vscode-languageclient loaded here only extend or read at load time
const workspace = {
  getConfiguration,
  onDidChangeConfiguration: (listener) => (listeners.push(listener), { dispose() {} }),
};
const vscode = new Proxy({ workspace }, { get: (target, name) => (name in target ? target[name] : class {}) });
const resolve = Module._resolveFilename;
Module._resolveFilename = function (request, ...rest) {
  return request === "vscode" ? "vscode" : resolve.call(this, request, ...rest);
};
require.cache.vscode = { id: "vscode", filename: "vscode", loaded: true, exports: vscode };

const extension = require("../extension.js");
const { ConfigurationFeature, SyncConfigurationFeature } = require("vscode-languageclient/lib/common/configuration");
const rpc = require("vscode-jsonrpc/node");

const EXAMPLE = path.join(__dirname, "..", "..", "..", "examples", "mnist_mlp.dl");

async function until(check, what) {
  for (let i = 0; i < 1500; i++) {
    const value = check();
    if (value) return value;
    await new Promise((done) => setTimeout(done, 20));
  }
  throw new Error(`waited 30 s for ${what}`);
}

test("the settings reach the server at its start, when changed, and when it asks", async () => {
  if (process.env.DLC_LSP_COMMAND) user["dlc.command"] = JSON.parse(process.env.DLC_LSP_COMMAND);
  const options = extension.clientOptions();
  assert.deepStrictEqual(options.initializationOptions, { inlayHints: true });
  assert.strictEqual(options.synchronize.configurationSection, "dlc");

  const { command, args } = extension.serverOptions();
  const server = spawn(command, args, { stdio: ["pipe", "pipe", "inherit"] });
  const exited = new Promise((done) => server.on("exit", done));
  const connection = rpc.createMessageConnection(new rpc.StreamMessageReader(server.stdout),
                                                 new rpc.StreamMessageWriter(server.stdin));
  const asked = [];             // the requests the server sent the client, by method
  const diagnostics = {};
  connection.onNotification("textDocument/publishDiagnostics", (p) => { diagnostics[p.uri] = p.diagnostics; });
  connection.onRequest("workspace/inlayHint/refresh", () => (asked.push("workspace/inlayHint/refresh"), null));
  // what LanguageClient gives its features, over this connection
  const client = {
    clientOptions: options,
    middleware: {},
    protocol2CodeConverter: { asUri: (uri) => uri },
    onRequest: (type, handler) => connection.onRequest(type, (params, token) => (asked.push(type.method), handler(params, token))),
    sendNotification: (type, params) => connection.sendNotification(type, params),
    error: (message, error) => { throw error; },
  };
  const features = [new ConfigurationFeature(client), new SyncConfigurationFeature(client)];
  const capabilities = { workspace: { inlayHint: { refreshSupport: true } } };
  for (const feature of features) feature.fillClientCapabilities(capabilities);
  assert.strictEqual(capabilities.workspace.configuration, true);
  connection.listen();

  user["dlc.inlayHints"] = false;       // set before the start: initializationOptions carries it
  await connection.sendRequest("initialize", { processId: process.pid, rootUri: null, capabilities,
                                               initializationOptions: extension.clientOptions().initializationOptions });
  await connection.sendNotification("initialized", {});
  for (const feature of features) feature.initialize();       // sends didChangeConfiguration with the section
  const uri = "file://" + EXAMPLE;
  const text = fs.readFileSync(EXAMPLE, "utf8");
  await connection.sendNotification("textDocument/didOpen", { textDocument: { uri, languageId: "dl", version: 1, text } });
  await until(() => diagnostics[uri], "the diagnostics");
  const hints = () => connection.sendRequest("textDocument/inlayHint", {
    textDocument: { uri }, range: { start: { line: 0, character: 0 }, end: { line: text.split("\n").length, character: 0 } } });
  assert.deepStrictEqual(await hints(), []);
  await until(() => asked.includes("workspace/configuration"), "the server to ask for its settings");

  changeSetting("dlc.inlayHints", true);        // VS Code's settings editor: pushed, then asked for
  await until(() => asked.includes("workspace/inlayHint/refresh"), "the server to ask for the hints again");
  const shown = await hints();
  assert.ok(shown.some((h) => h.label === ": f32[B, 10]"), JSON.stringify(shown));

  changeSetting("dlc.inlayHints", false);
  await until(() => asked.filter((m) => m === "workspace/inlayHint/refresh").length === 2, "a second refresh");
  assert.deepStrictEqual(await hints(), []);

  await connection.sendRequest("shutdown");
  await connection.sendNotification("exit");
  assert.strictEqual(await exited, 0);
  connection.dispose();
});
