// The page's visible state: status line, progress bar, error message, body[data-state].
const $ = (id) => document.getElementById(id);
export { $ };

export function setState(state) { document.body.dataset.state = state; }

export function status(text) { $('status').textContent = text; }

// progress(fraction in [0, 1]), progress(null) for "working, amount unknown", progress(false) to hide.
export function progress(value) {
  const box = $('progress');
  if (value === false) { box.hidden = true; return; }
  box.hidden = false;
  box.classList.toggle('indeterminate', value === null);
  $('progress-bar').style.width = value === null ? '' : `${Math.round(value * 100)}%`;
}

export function showError(err) {
  const text = String((err && err.message) || err);
  const box = $('message');
  box.textContent = text;
  box.hidden = false;
  progress(false);
  status('Stopped: see the message below. The page keeps working: choose another photo, style or model.');
  setState('error');
  console.error(err);
}

export function clearError() { $('message').hidden = true; $('message').textContent = ''; }

export function note(text) { $('note').hidden = !text; $('note').textContent = text || ''; }

export function megabytes(bytes) { return `${(bytes / 1e6).toFixed(1)} MB`; }

// Make a label element accept dropped files and clicks (its hidden file input).
export function dropZone(zone, input, onFile) {
  zone.addEventListener('dragover', (e) => { e.preventDefault(); zone.classList.add('over'); });
  zone.addEventListener('dragleave', () => zone.classList.remove('over'));
  zone.addEventListener('drop', (e) => {
    e.preventDefault();
    zone.classList.remove('over');
    const file = e.dataTransfer.files[0];
    if (file) onFile(file);
  });
  zone.addEventListener('keydown', (e) => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); input.click(); } });
  input.addEventListener('change', () => { if (input.files[0]) onFile(input.files[0]); input.value = ''; });
}
