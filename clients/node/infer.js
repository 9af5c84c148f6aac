#!/usr/bin/env node
// Classify one sample through Triton's gRPC API (KServe v2, package `inference`) from Node.js.
//
//   npm ci --prefix clients/node               # @grpc/grpc-js + @grpc/proto-loader, from npm
//   node clients/node/infer.js --url 127.0.0.1:8001 --text "the answer is seven" \
//       --image clients/samples/sample2_three.png --audio clients/samples/sample2_three.wav --top-k 3
//
// triton.protoset (next to this file) is Triton's grpc_service.proto + model_config.proto as a descriptor set,
// written from the tritonclient wheel by `trimodal protoset clients/node/triton.protoset` (a test keeps it equal).
//
// Any modality may be left out: it is sent as an empty element, which the server treats as absent.
// BYTES tensors travel in raw_input_contents as a 4-byte little-endian length followed by the bytes.
"use strict";

const fs = require("fs");
const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

function parseArgs(argv) {
  const args = {
    url: "127.0.0.1:8001",
    protoset: path.join(__dirname, "triton.protoset"),
    topK: 3,
    timeout: 10,
    text: "",
  };
  for (let i = 0; i < argv.length; i += 2) {
    const [flag, value] = [argv[i], argv[i + 1]];
    if (value === undefined) throw new Error(`${flag} needs a value`);
    if (flag === "--url") args.url = value;
    else if (flag === "--protoset") args.protoset = value;
    else if (flag === "--image") args.image = value;
    else if (flag === "--audio") args.audio = value;
    else if (flag === "--text") args.text = value;
    else if (flag === "--top-k") args.topK = parseInt(value, 10);
    else if (flag === "--timeout") args.timeout = parseFloat(value);
    else throw new Error(`unknown option ${flag}`);
  }
  return args;
}

function bytesElement(payload) {
  const length = Buffer.alloc(4);
  length.writeUInt32LE(payload.length, 0);
  return Buffer.concat([length, payload]);
}

function bytesElements(buffer) {
  const elements = [];
  for (let offset = 0; offset < buffer.length; ) {
    const size = buffer.readUInt32LE(offset);
    elements.push(buffer.subarray(offset + 4, offset + 4 + size).toString("utf8"));
    offset += 4 + size;
  }
  return elements;
}

function main() {
  const args = parseArgs(process.argv.slice(2));
  const definition = protoLoader.loadFileDescriptorSetFromBuffer(fs.readFileSync(args.protoset), {
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  const { inference } = grpc.loadPackageDefinition(definition);
  const client = new inference.GRPCInferenceService(args.url, grpc.credentials.createInsecure());
  const payloads = {
    IMAGE: args.image ? fs.readFileSync(args.image) : Buffer.alloc(0),
    TEXT: Buffer.from(args.text, "utf8"),
    AUDIO: args.audio ? fs.readFileSync(args.audio) : Buffer.alloc(0),
  };
  const request = {
    model_name: "multimodal",
    inputs: Object.keys(payloads).map((name) => ({ name, datatype: "BYTES", shape: [1, 1] })),
    raw_input_contents: Object.values(payloads).map(bytesElement),
    outputs: [
      { name: "PROBABILITIES" },
      // top-k as "score:index:label" strings (classification extension). Loaded from a descriptor set, protobuf
      // maps are lists of {key, value} entries.
      { name: "LABEL", parameters: [{ key: "classification", value: { int64_param: args.topK } }] },
    ],
  };
  const deadline = new Date(Date.now() + args.timeout * 1000);
  client.ModelInfer(request, { deadline }, (error, response) => {
    client.close();
    if (error) {
      console.error(`${grpc.status[error.code]}: ${error.details}`);
      process.exitCode = 1;
      return;
    }
    const names = response.outputs.map((output) => output.name);
    const raw = response.raw_output_contents;
    const probabilities = raw[names.indexOf("PROBABILITIES")];
    let sum = 0;
    for (let offset = 0; offset < probabilities.length; offset += 4) sum += probabilities.readFloatLE(offset);
    for (const entry of bytesElements(raw[names.indexOf("LABEL")])) {
      const [score, index, label] = entry.split(":");
      console.log(`${label.padEnd(8)} ${parseFloat(score).toFixed(4)} (class ${index})`);
    }
    console.log(`sum of probabilities: ${sum.toFixed(4)}`);
  });
}

try {
  main();
} catch (error) {
  console.error(`error: ${error.message}`);
  process.exitCode = 2;
}
