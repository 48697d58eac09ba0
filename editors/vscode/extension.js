// The VS Code client of the dlc language server: starts `dlc lsp` (the setting dlc.command)
// over stdio for .dl files. Everything the editor shows beyond colors comes from the server.
const vscode = require("vscode");
const { LanguageClient } = require("vscode-languageclient/node");

let client;

function activate(context) {
  const [command, ...args] = vscode.workspace.getConfiguration("dlc").get("command", ["dlc", "lsp"]);
  client = new LanguageClient(
    "dlc",
    "dlc language server",
    { command, args },
    { documentSelector: [{ scheme: "file", language: "dl" }, { scheme: "untitled", language: "dl" }] }
  );
  context.subscriptions.push(client);
  return client.start();
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate };
