// A small node-opcua server for the interoperability test (another OPC UA stack than asyncua).
// Usage: node node_opcua_server.js PORT PKI_DIR   -> prints "READY <endpoint url>" when it serves.
// Variables ns=1;s=Plc.v0 .. v7 (Double) change every 100 ms; OperationLimits are set low (3) and
// node-opcua enforces them, so the driver must split its requests.
// Node 18 (Debian 12) has WebCrypto only as require("crypto").webcrypto; node-opcua expects globalThis.crypto.
globalThis.crypto ??= require("node:crypto").webcrypto;
const { OPCUAServer } = require("node-opcua-server");
const { OPCUACertificateManager } = require("node-opcua-certificate-manager");
const { Variant, DataType } = require("node-opcua-variant");

async function main() {
  const port = parseInt(process.argv[2], 10);
  // Its own PKI under the test's directory; it accepts the test client's certificate.
  const serverCertificateManager = new OPCUACertificateManager({
    rootFolder: process.argv[3],
    automaticallyAcceptUnknownCertificate: true,
  });
  const server = new OPCUAServer({
    serverCertificateManager,
    port,
    hostname: "127.0.0.1",
    resourcePath: "/plc",
    serverCapabilities: {
      operationLimits: { maxNodesPerRead: 3, maxMonitoredItemsPerCall: 3, maxNodesPerTranslateBrowsePathsToNodeIds: 3 },
    },
  });
  await server.initialize();
  const addressSpace = server.engine.addressSpace;
  const ns = addressSpace.getOwnNamespace();
  const plc = ns.addObject({ organizedBy: addressSpace.rootFolder.objects, browseName: "Plc", nodeId: "s=Plc" });
  let tick = 0;
  setInterval(() => { tick += 1; }, 100);
  for (let i = 0; i < 8; i++) {
    ns.addVariable({
      componentOf: plc,
      browseName: `v${i}`,
      nodeId: `s=Plc.v${i}`,
      dataType: "Double",
      minimumSamplingInterval: 50,
      value: { get: () => new Variant({ dataType: DataType.Double, value: i * 1000 + tick }) },
    });
  }
  await server.start();
  console.log("READY " + server.getEndpointUrl());
  process.on("SIGTERM", async () => { await server.shutdown(100); process.exit(0); });
}

main().catch((err) => { console.error(err); process.exit(1); });
