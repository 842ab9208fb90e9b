// Webcam mode: frames from getUserMedia, stylized one at a time (the next frame is taken when the network is
// free, so a slow device drops frames instead of falling behind), with frames per second shown.
import { compose, fitSize, makeCanvas, toCHW } from './pixels.js';

export class Webcam {
  constructor({ canvas, getModel, getStyle, getLook, onFps, onError }) {
    Object.assign(this, { canvas, getModel, getStyle, getLook, onFps, onError });
    this.video = document.createElement('video');
    this.video.muted = true;
    this.video.playsInline = true;
    this.running = false;
    this.frames = 0;
    this.size = 256;
  }

  async start(size) {
    this.size = size;
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      throw new Error('this browser gives the page no camera (it needs https or localhost)');
    }
    try {
      this.stream = await navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 640 }, height: { ideal: 480 } }, audio: false });
    } catch (err) {
      throw new Error(`the camera could not be opened (${err.name}: ${err.message}); allow camera access for this page`);
    }
    this.video.srcObject = this.stream;
    await this.video.play();
    this.running = true;
    this.frames = 0;
    this.times = [];
    this.loop();
  }

  stop() {
    this.running = false;
    if (this.stream) for (const t of this.stream.getTracks()) t.stop();
    this.stream = null;
  }

  async loop() {
    while (this.running) {
      const v = this.video;
      if (v.readyState < 2 || !v.videoWidth) { await new Promise((r) => setTimeout(r, 20)); continue; }
      try {
        // a square-ish crop would change the framing: scale the whole frame, longer side = size
        const [w, h] = fitSize(v.videoWidth, v.videoHeight, this.size);
        if (!this.grab || this.grab.width !== w || this.grab.height !== h) {  // one canvas for all frames
          this.grab = makeCanvas(w, h);
          this.grabContext = this.grab.getContext('2d', { willReadFrequently: true });
        }
        this.grabContext.drawImage(v, 0, 0, w, h);
        const content = this.grabContext.getImageData(0, 0, w, h);
        const model = this.getModel();
        const out = await model.run(toCHW(content), w, h, this.getStyle());
        if (!this.running) break;
        const image = compose(out, content, this.getLook());
        if (this.canvas.width !== w || this.canvas.height !== h) { this.canvas.width = w; this.canvas.height = h; }
        this.canvas.getContext('2d').putImageData(image, 0, 0);
        this.frames += 1;
        const now = performance.now();
        this.times.push(now);
        while (this.times.length > 1 && now - this.times[0] > 2000) this.times.shift();
        const fps = this.times.length > 1 ? (this.times.length - 1) / ((now - this.times[0]) / 1000) : 0;
        this.fps = fps;
        this.onFps(fps, w, h);
      } catch (err) {
        this.stop();
        this.onError(err);
        return;
      }
      await new Promise((r) => setTimeout(r, 0));  // let the page paint and handle input between frames
    }
  }
}
