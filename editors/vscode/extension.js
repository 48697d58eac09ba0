// The VS Code client of the dlc language server: starts `dlc lsp` (the setting dlc.command)
// over stdio for .dl files. Everything the editor shows beyond colors comes from the server.
// The server's settings (every `dlc.*` setting but the command) reach it three ways, as
// docs/editors.md says: in `initializationOptions` at its start, in each
// workspace/didChangeConfiguration (synchronize.configurationSection), and as the answer to
// its own workspace/configuration requests (vscode-languageclient answers those).
const vscode = require("vscode");
const { LanguageClient } = require("vscode-languageclient/node");

const SECTION = "dlc";
let client;

function serverSettings() {
  const { command, ...settings } = JSON.parse(JSON.stringify(vscode.workspace.getConfiguration(SECTION)));
  return settings;
}

function serverOptions() {
  const [command, ...args] = vscode.workspace.getConfiguration(SECTION).get("command", ["dlc", "lsp"]);
  return { command, args };
}

function clientOptions() {
  return {
    documentSelector: [{ scheme: "file", language: "dl" }, { scheme: "untitled", language: "dl" }],
    initializationOptions: serverSettings(),
    synchronize: { configurationSection: SECTION },
  };
}

function activate(context) {
  client = new LanguageClient("dlc", "dlc language server", serverOptions(), clientOptions());
  context.subscriptions.push(client);
  return client.start();
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate, clientOptions, serverOptions, SECTION };
