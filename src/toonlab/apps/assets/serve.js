const form = document.getElementById('form');
const statusBox = document.getElementById('status');
const errorBox = document.getElementById('error');
const result = document.getElementById('result');
const button = form.querySelector('button');
const LIMITS = JSON.parse(document.getElementById('limits').textContent);
function showError(msg) {
  errorBox.textContent = msg; errorBox.hidden = false; statusBox.textContent = '';
}
form.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  errorBox.hidden = true;
  const file = form.elements.photo.files[0];
  if (!file) { showError('Choose a photo first.'); return; }
  if (file.size > LIMITS.max_upload_bytes) {
    showError(`The photo is ${(file.size / 1048576).toFixed(1)} MB; the limit is ` +
              `${(LIMITS.max_upload_bytes / 1048576).toFixed(0)} MB.`);
    return;
  }
  const body = new FormData(form);
  body.set('paste_back', form.elements.paste_back.checked ? '1' : '0');
  body.set('matte', form.elements.matte.checked ? '1' : '0');
  button.disabled = true;
  statusBox.textContent = 'Cartoonizing ' + file.name + ' ... (the first photo of a run also loads it)';
  try {
    const resp = await fetch('api/cartoonize', {method: 'POST', body});
    let data;
    try { data = await resp.json(); } catch (e) { data = {error: 'the server answered ' + resp.status}; }
    if (!resp.ok) { showError(data.error || ('the server answered ' + resp.status)); return; }
    document.getElementById('original').src = data.original;
    document.getElementById('cartoon').src = data.cartoon;
    document.getElementById('download').href = data.cartoon;
    document.getElementById('cap-original').textContent =
      `${data.filename}: ${data.width} x ${data.height}, ${data.faces} face(s)`;
    document.getElementById('cap-cartoon').textContent =
      `${data.run} (${data.family})${data.paste_back ? ', pasted back' : ', aligned faces'}`;
    const crops = document.getElementById('crops');
    crops.replaceChildren(...data.crops.map((c, i) => {
      const d = document.createElement('div');
      for (const [src, alt] of [[c.input, 'face ' + i], [c.cartoon, 'cartoon ' + i]]) {
        const im = document.createElement('img'); im.src = src; im.alt = alt; d.appendChild(im);
      }
      return d;
    }));
    result.hidden = false;
    statusBox.textContent = `Done in ${(data.ms.decode + data.ms.faces).toFixed(0)} ms.`;
  } catch (e) {
    showError('Could not reach the ToonLab server: ' + e);
  } finally {
    button.disabled = false;
  }
});
