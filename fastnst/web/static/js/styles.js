// The style controls: a chip per style (or saved style of an any-painting model) and, for a model of several
// styles, blend sliders whose weights are normalised like infer.py --style a=0.7,b=0.3. They write the chosen
// weights (or style vector) into state.style and call onChange to stylize again.
import { ModelError } from './model.js';
import { $, clearError, showError } from './ui.js';

let state = null, onChange = () => {};

export function initStyles(appState, changed) { state = appState; onChange = changed; }

export function buildStyles() {
  const desc = state.model.desc;
  const chips = $('style-chips');
  chips.replaceChildren();
  $('painting').hidden = desc.kind !== 'arbitrary';
  $('blend').hidden = !(desc.kind === 'styles' && desc.styles.length > 1);
  const names = desc.kind === 'arbitrary' ? desc.saved_styles.map((s) => s.name) : desc.styles;
  names.forEach((name, i) => {
    const chip = document.createElement('button');
    Object.assign(chip, { type: 'button', className: 'chip', textContent: name });
    chip.setAttribute('role', 'radio');
    chip.addEventListener('click', () => { pickStyle(i); onChange(); });
    chips.append(chip);
  });
  const sliders = $('blend-sliders');
  sliders.replaceChildren();
  if (desc.kind === 'styles' && desc.styles.length > 1) {
    desc.styles.forEach((name, i) => {
      const label = document.createElement('label');
      label.className = 'slider';
      label.innerHTML = `<span></span><output>0%</output><input type="range" min="0" max="1" step="0.05" value="0">`;
      label.querySelector('span').textContent = name;
      label.querySelector('input').addEventListener('change', blendChanged);
      label.querySelector('input').addEventListener('input', () => { label.querySelector('output').textContent = `${Math.round(label.querySelector('input').value * 100)}%`; });
      sliders.append(label);
      void i;
    });
  }
  $('styles-group').hidden = desc.kind === 'styles' && desc.styles.length === 1;
  if (names.length) pickStyle(0);
  else state.style = null;
}

export function showWeights(w) {
  const inputs = $('blend-sliders').querySelectorAll('input');
  inputs.forEach((input, i) => { input.value = w[i]; input.previousElementSibling.textContent = `${Math.round(w[i] * 100)}%`; });
  $('style-chips').querySelectorAll('.chip').forEach((c, i) => c.setAttribute('aria-checked', String(w[i] === 1)));
}

export function pickStyle(i) {
  const desc = state.model.desc;
  if (desc.kind === 'arbitrary') {
    state.style = Float32Array.from(desc.saved_styles[i].vector);
    state.styleLabel = desc.saved_styles[i].name;
    $('style-chips').querySelectorAll('.chip').forEach((c, j) => c.setAttribute('aria-checked', String(i === j)));
    return;
  }
  if (desc.styles.length === 1) { state.style = null; state.styleLabel = desc.styles[0]; return; }
  const w = new Float32Array(desc.styles.length);
  w[i] = 1;
  state.style = w;
  state.styleLabel = desc.styles[i];
  showWeights(w);
}

function blendChanged() {
  const inputs = [...$('blend-sliders').querySelectorAll('input')];
  const w = Float32Array.from(inputs.map((x) => Number(x.value)));
  const sum = w.reduce((a, b) => a + b, 0);
  if (sum <= 0) { showError(new ModelError('the blend weights are all 0; give at least one style some weight')); return; }
  clearError();
  state.style = w.map((x) => x / sum);
  state.styleLabel = state.model.desc.styles.filter((_, i) => w[i] > 0).join('+');
  showWeights(state.style);
  onChange();
}

