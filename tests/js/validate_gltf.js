#!/usr/bin/env node
// Validate glTF / GLB files with the Khronos glTF validator (npm "gltf-validator", which has no CLI).
//
//   node tests/js/validate_gltf.js FILE [FILE ...]
//
// Prints one JSON object {FILE: report, ...} (the validator's report, without the timestamp)
// and exits 0 when no file has errors, 1 when some file has errors, 2 when a file could not
// be read or validated at all. External resources of .gltf files are read relative to the file.
"use strict";

const fs = require("fs");
const path = require("path");
const validator = require("gltf-validator");

async function validate(file) {
  const bytes = new Uint8Array(fs.readFileSync(file));
  return validator.validateBytes(bytes, {
    uri: path.basename(file),
    maxIssues: 0, // report every issue
    writeTimestamp: false,
    externalResourceFunction: (uri) =>
      fs.promises.readFile(path.resolve(path.dirname(file), decodeURIComponent(uri))).then((b) => new Uint8Array(b)),
  });
}

async function main(files) {
  if (files.length === 0) {
    console.error("usage: node validate_gltf.js FILE [FILE ...]");
    return 2;
  }
  const reports = {};
  let status = 0;
  for (const file of files) {
    try {
      reports[file] = await validate(file);
      if (reports[file].issues.numErrors > 0) status = Math.max(status, 1);
    } catch (error) {
      reports[file] = { fatal: String(error) };
      status = 2;
    }
  }
  console.log(JSON.stringify(reports, null, 2));
  return status;
}

main(process.argv.slice(2)).then((code) => process.exit(code));
