// A Modbus TCP server from another implementation (npm "modbus-serial"), for interoperability tests.
// Usage: node modbus_serial_server.js PORT '{"holding": [..], "input": [..], "coils": [..]}'
// Serves the given tables from protocol address 0 to any unit id; prints "listening" once it accepts.
"use strict";
const ModbusRTU = require("modbus-serial");

const port = Number(process.argv[2]);
const tables = JSON.parse(process.argv[3]);
const holding = tables.holding || [];
const input = tables.input || [];
const coils = tables.coils || [];

function lookup(table, addr) {
    if (addr >= table.length) {
        throw { modbusErrorCode: 0x02, msg: "illegal data address" };
    }
    return table[addr];
}

const vector = {
    getHoldingRegister: (addr) => lookup(holding, addr),
    getInputRegister: (addr) => lookup(input, addr),
    getCoil: (addr) => Boolean(lookup(coils, addr)),
    getDiscreteInput: (addr) => Boolean(lookup(coils, addr)),
};

const server = new ModbusRTU.ServerTCP(vector, { host: "127.0.0.1", port: port, unitID: 255 });
server.on("initialized", () => console.log("listening"));
server.on("serverError", (err) => { console.error(String(err)); process.exit(1); });
server.on("socketError", () => {});
