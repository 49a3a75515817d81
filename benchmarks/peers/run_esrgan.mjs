// Upscale every PNG in a folder with the ESRGAN "thick" RRDN of @upscalerjs/esrgan-thick (tfjs, wasm backend).
//
//   node run_esrgan.mjs --scale 8 --input DIR --output DIR [--threads 1]
//
// Uses the package's own model definition (custom layers, input and output range) and loads its
// model.json + weight shards from node_modules through a file-system IO handler: no network.
// Writes one RGB PNG per input (same name) and timings.json (seconds per image, excluding one warm-up).
import { createRequire } from "node:module";
import fs from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";

const require = createRequire(import.meta.url);
const tf = require("@tensorflow/tfjs");
const wasm = require("@tensorflow/tfjs-backend-wasm");
const { PNG } = require("pngjs");

const SCALES = [2, 3, 4, 8];
const PEER = "@upscalerjs/esrgan-thick";
const PACKAGE_DIR = packageDir(PEER);

/** The installed package's root folder (its "exports" hide package.json from require.resolve). */
function packageDir(name) {
  let dir = path.dirname(require.resolve(name));
  while (!fs.existsSync(path.join(dir, "package.json")) || JSON.parse(fs.readFileSync(path.join(dir, "package.json"))).name !== name) {
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error(`cannot find the root folder of ${name}`);
    dir = parent;
  }
  return dir;
}

function fail(message) {
  console.error(`run_esrgan: ${message}`);
  process.exit(2);
}

function options() {
  const { values } = parseArgs({
    options: {
      scale: { type: "string" },
      input: { type: "string" },
      output: { type: "string" },
      threads: { type: "string", default: "1" },
    },
  });
  const scale = Number(values.scale);
  if (!SCALES.includes(scale)) fail(`--scale must be one of ${SCALES.join(", ")}; got ${values.scale}.`);
  if (!values.input || !fs.existsSync(values.input)) fail(`--input must be a folder of PNGs; got ${values.input}.`);
  if (!values.output) fail("--output (a folder to write the upscaled PNGs to) is required.");
  const threads = Number(values.threads);
  if (!Number.isInteger(threads) || threads < 1) fail(`--threads must be a positive integer; got ${values.threads}.`);
  return { scale, input: values.input, output: values.output, threads };
}

/** An IO handler that reads a tfjs layers model (model.json + shards) from the file system. */
function fileHandler(modelJson) {
  return {
    async load() {
      const model = JSON.parse(fs.readFileSync(modelJson, "utf8"));
      const dir = path.dirname(modelJson);
      const weightSpecs = model.weightsManifest.flatMap((group) => group.weights);
      const shards = model.weightsManifest.flatMap((group) => group.paths).map((p) => fs.readFileSync(path.join(dir, p)));
      const bytes = Buffer.concat(shards);
      const weightData = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
      return {
        modelTopology: model.modelTopology,
        format: model.format,
        generatedBy: model.generatedBy,
        convertedBy: model.convertedBy,
        weightSpecs,
        weightData,
      };
    },
  };
}

async function loadModel(scale) {
  const definition = require(`${PEER}/${scale}x`);
  if (definition.modelType !== "layers") fail(`expected a layers model, got ${definition.modelType}.`);
  if (definition.setup) definition.setup(tf); // registers MultiplyBeta and PixelShuffle{scale}x
  const model = await tf.loadLayersModel(fileHandler(path.join(PACKAGE_DIR, definition._internals.path)));
  return { model, definition };
}

function readPng(file) {
  const png = PNG.sync.read(fs.readFileSync(file));
  const rgb = new Float32Array(png.width * png.height * 3);
  for (let i = 0, j = 0; i < png.data.length; i += 4, j += 3) {
    rgb[j] = png.data[i];
    rgb[j + 1] = png.data[i + 1];
    rgb[j + 2] = png.data[i + 2];
  }
  return { rgb, width: png.width, height: png.height };
}

function writePng(file, pixels, width, height) {
  const png = new PNG({ width, height, colorType: 2 });
  for (let i = 0, j = 0; j < pixels.length; i += 4, j += 3) {
    png.data[i] = pixels[j];
    png.data[i + 1] = pixels[j + 1];
    png.data[i + 2] = pixels[j + 2];
    png.data[i + 3] = 255;
  }
  fs.writeFileSync(file, PNG.sync.write(png, { colorType: 2 }));
}

/** 8-bit RGB -> model input range -> model -> clipped output range -> 8-bit RGB (rounded). */
function upscale(model, definition, { rgb, width, height }) {
  const [inLo, inHi] = definition.inputRange;
  const [outLo, outHi] = definition.outputRange;
  return tf.tidy(() => {
    const x = tf.tensor4d(rgb, [1, height, width, 3]).div(255).mul(inHi - inLo).add(inLo);
    const y = model.predict(x);
    const pixels = y.clipByValue(outLo, outHi).sub(outLo).div(outHi - outLo).mul(255).round();
    return { data: pixels.dataSync(), shape: pixels.shape };
  });
}

async function main() {
  const { scale, input, output, threads } = options();
  wasm.setThreadsCount(threads);
  await tf.setBackend("wasm");
  await tf.ready();
  const { model, definition } = await loadModel(scale);
  const files = fs.readdirSync(input).filter((f) => f.toLowerCase().endsWith(".png")).sort();
  if (!files.length) fail(`no .png files in ${input}.`);
  fs.mkdirSync(output, { recursive: true });

  upscale(model, definition, readPng(path.join(input, files[0]))); // warm-up: kernel compilation, allocation
  const seconds = [];
  for (const name of files) {
    const image = readPng(path.join(input, name));
    const started = process.hrtime.bigint();
    const { data, shape } = upscale(model, definition, image);
    seconds.push(Number(process.hrtime.bigint() - started) / 1e9);
    if (shape[1] !== image.height * scale || shape[2] !== image.width * scale) {
      fail(`${name}: expected ${image.width * scale}x${image.height * scale} output, got ${shape[2]}x${shape[1]}.`);
    }
    writePng(path.join(output, name), data, shape[2], shape[1]);
  }
  const timings = {
    images: files.length,
    seconds_per_image: seconds.reduce((a, b) => a + b, 0) / seconds.length,
    seconds,
    backend: tf.getBackend(),
    threads: wasm.getThreadsCount ? wasm.getThreadsCount() : threads,
    input_range: definition.inputRange,
    output_range: definition.outputRange,
    model_file: definition.meta.modelFileName,
    versions: {
      node: process.versions.node,
      tfjs: tf.version.tfjs,
      "tfjs-backend-wasm": wasm.version_wasm,
      [PEER]: JSON.parse(fs.readFileSync(path.join(PACKAGE_DIR, "package.json"))).version,
      pngjs: require("pngjs/package.json").version,
    },
  };
  fs.writeFileSync(path.join(output, "timings.json"), JSON.stringify(timings, null, 2) + "\n");
  console.log(`${files.length} images x${scale}: ${timings.seconds_per_image.toFixed(3)} s/image (${timings.backend}, ${timings.threads} thread(s))`);
}

main().catch((error) => fail(error.stack || String(error)));
