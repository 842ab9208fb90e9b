// Read what onnxruntime-web cannot: an ONNX file's metadata_props and graph inputs/outputs, straight from
// the protobuf bytes (ModelProto: graph = field 7, metadata_props = 14; GraphProto: initializer = 5,
// input = 11, output = 12; ValueInfoProto.name = 1; StringStringEntryProto key = 1, value = 2).

class Reader {
  constructor(bytes, start = 0, end = bytes.length) { this.b = bytes; this.pos = start; this.end = end; }
  varint() {
    let result = 0, shift = 0, byte;
    do {
      if (this.pos >= this.end) throw new Error('truncated varint');
      byte = this.b[this.pos++];
      result += (byte & 0x7f) * 2 ** shift;  // no 32-bit overflow: lengths of big models exceed 2^31
      shift += 7;
    } while (byte & 0x80 && shift < 64);
    return result;
  }
  // Yields [field, wireType, start, end] for every field of the message; length-delimited fields give their
  // payload's range, others are skipped.
  *fields() {
    while (this.pos < this.end) {
      const key = this.varint();
      const field = Math.floor(key / 8), wire = key & 7;
      if (field === 0) throw new Error('field number 0');
      if (wire === 0) { this.varint(); yield [field, wire, 0, 0]; }
      else if (wire === 1) { this.pos += 8; yield [field, wire, 0, 0]; }
      else if (wire === 5) { this.pos += 4; yield [field, wire, 0, 0]; }
      else if (wire === 2) {
        const len = this.varint(), start = this.pos;
        this.pos += len;
        if (this.pos > this.end) throw new Error('truncated field');
        yield [field, wire, start, this.pos];
      } else throw new Error(`wire type ${wire}`);
    }
  }
}

const text = new TextDecoder('utf-8', { fatal: false });

function stringsOf(bytes, start, end, keyField, valueField) {
  const out = {};
  for (const [f, w, s, e] of new Reader(bytes, start, end).fields()) {
    if (w === 2 && (f === keyField || f === valueField)) out[f] = text.decode(bytes.subarray(s, e));
  }
  return out;
}

function valueInfo(bytes, start, end) {
  // ValueInfoProto: name = 1, type = 2 (TypeProto.tensor_type = 1 -> shape = 2 -> dim = 1 (dim_value 1, dim_param 2))
  let name = '', dims = [];
  for (const [f, w, s, e] of new Reader(bytes, start, end).fields()) {
    if (f === 1 && w === 2) name = text.decode(bytes.subarray(s, e));
    if (f === 2 && w === 2) {
      for (const [tf, tw, ts, te] of new Reader(bytes, s, e).fields()) {
        if (tf !== 1 || tw !== 2) continue;
        for (const [sf, sw, ss, se] of new Reader(bytes, ts, te).fields()) {
          if (sf !== 2 || sw !== 2) continue;
          for (const [df, dw, ds, de] of new Reader(bytes, ss, se).fields()) {
            if (df !== 1 || dw !== 2) continue;
            const r = new Reader(bytes, ds, de);
            let dim = '?';
            while (r.pos < r.end) {
              const key = r.varint();
              if (key === 8) dim = r.varint();
              else if ((key & 7) === 2) { const len = r.varint(); if (key >> 3 === 2) dim = text.decode(bytes.subarray(r.pos, r.pos + len)); r.pos += len; }
              else break;
            }
            dims.push(dim);
          }
        }
      }
    }
  }
  return { name, dims };
}

// {metadata: {key: value}, inputs: [{name, dims}], outputs: [...]} of an ONNX model; throws on bytes that
// are not a protobuf ModelProto.
export function readOnnxHeader(buffer) {
  const bytes = new Uint8Array(buffer);
  const metadata = {}, inputs = [], outputs = [], initializers = new Set();
  let sawGraph = false, sawVersion = false;
  for (const [f, w, s, e] of new Reader(bytes).fields()) {
    if (f === 1 && w === 0) sawVersion = true;
    if (f === 14 && w === 2) { const kv = stringsOf(bytes, s, e, 1, 2); if (kv[1] !== undefined) metadata[kv[1]] = kv[2] ?? ''; }
    if (f === 7 && w === 2) {
      sawGraph = true;
      for (const [gf, gw, gs, ge] of new Reader(bytes, s, e).fields()) {
        if (gw !== 2) continue;
        if (gf === 5) { const t = stringsOf(bytes, gs, ge, 8, 8); if (t[8]) initializers.add(t[8]); }
        if (gf === 11) inputs.push(valueInfo(bytes, gs, ge));
        if (gf === 12) outputs.push(valueInfo(bytes, gs, ge));
      }
    }
  }
  if (!sawGraph || !sawVersion) throw new Error('not an ONNX model');
  return { metadata, inputs: inputs.filter((i) => !initializers.has(i.name)), outputs };
}
