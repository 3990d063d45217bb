// The DICOM viewer: Cornerstone3D over this server's own DICOMweb (QIDO-RS for the series,
// WADO-RS metadata and frames for the pixels). It never decides who may see a study: every request
// carries the caller's credentials (a bearer token, or the portal's session cookie through the
// portal's DICOMweb proxy) and the server's access gate answers 403/404 for anything not theirs.
import {
  Enums,
  RenderingEngine,
  eventTarget,
  init as coreInit,
} from '@cornerstonejs/core';
import {
  Enums as ToolEnums,
  LengthTool,
  PanTool,
  StackScrollTool,
  ToolGroupManager,
  WindowLevelTool,
  ZoomTool,
  addTool,
  annotation,
  init as toolsInit,
} from '@cornerstonejs/tools';
import dicomImageLoader from '@cornerstonejs/dicom-image-loader';
import { sameOriginPath, takeToken } from './auth.js';
import { t } from './i18n.js';

const ENGINE = 'fs-viewer-engine';
const VIEWPORT = 'fs-viewer-stack';
const GROUP = 'fs-viewer-tools';
const TOOLS = {
  wl: WindowLevelTool.toolName,
  zoom: ZoomTool.toolName,
  pan: PanTool.toolName,
  length: LengthTool.toolName,
};

const params = new URLSearchParams(location.search);
const token = takeToken();
// the portal's proxy uses the portal session; a bearer token goes straight to /dicomweb
const root = sameOriginPath(params.get('dicomweb')) || (token ? '/dicomweb' : '/portal/dicomweb');
const studyUID = params.get('study') || '';
const lang = (params.get('lang') || document.documentElement.lang || navigator.language || 'en').slice(0, 2);
const $ = (id) => document.getElementById(id);

const state = { series: [], seriesIndex: 0, imageIds: [], instances: [], viewport: null, tool: 'wl' };
window.fsViewer = state; // read by the browser tests and handy in a console
state.annotations = () => annotation.state.getAllAnnotations();

function headers(extra = {}) {
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

async function getJSON(path) {
  const resp = await fetch(root + path, { headers: headers({ Accept: 'application/dicom+json' }),
                                          credentials: 'same-origin' });
  if (resp.status === 401 || resp.status === 403 || resp.status === 404) {
    throw new Error(t(lang, 'This study is not found or not yours to see.'));
  }
  if (!resp.ok) throw new Error(`${t(lang, 'The study could not be loaded')} (HTTP ${resp.status})`);
  if (resp.status === 204) return [];
  return resp.json();
}

const value = (ds, tag) => ((ds && ds[tag] && ds[tag].Value) || [])[0];

function say(text, isError = false) {
  const el = $('status');
  el.textContent = text;
  el.classList.toggle('error', isError);
  state.error = isError ? text : null;
}

function updateInfo() {
  const vp = state.viewport;
  if (!vp || !state.imageIds.length) return;
  const n = vp.getCurrentImageIdIndex();
  state.index = n;
  $('position').textContent = `${t(lang, 'Image')} ${n + 1} ${t(lang, 'of')} ${state.imageIds.length}`;
  const voi = vp.getProperties().voiRange;
  if (voi) {
    const width = Math.round(voi.upper - voi.lower);
    const center = Math.round((voi.upper + voi.lower) / 2);
    state.voi = { width, center };
    $('voi').textContent = `W ${width} / L ${center}`;
  }
  updateMeasure();
  $('prev').disabled = n === 0;
  $('next').disabled = n + 1 >= state.imageIds.length;
}

function updateMeasure() {
  const lengths = annotation.state.getAllAnnotations()
    .filter((a) => a.metadata && a.metadata.toolName === TOOLS.length);
  const last = lengths[lengths.length - 1];
  const stats = last && Object.values(last.data.cachedStats || {})[0];
  if (stats && Number.isFinite(stats.length)) {
    state.lengthMM = stats.length;
    $('measure').textContent = `${t(lang, 'Length')}: ${stats.length.toFixed(1)} ${stats.unit || 'mm'}`;
  }
}

async function setup() {
  await coreInit();
  toolsInit();
  dicomImageLoader.init({
    maxWebWorkers: 1,
    beforeSend: () => headers(),
  });
  for (const Tool of [WindowLevelTool, ZoomTool, PanTool, StackScrollTool, LengthTool]) addTool(Tool);
  const group = ToolGroupManager.createToolGroup(GROUP);
  for (const name of Object.values(TOOLS)) group.addTool(name);
  group.addTool(StackScrollTool.toolName);
  const engine = new RenderingEngine(ENGINE);
  engine.enableElement({ viewportId: VIEWPORT, type: Enums.ViewportType.STACK, element: $('viewport') });
  group.addViewport(VIEWPORT, ENGINE);
  group.setToolActive(StackScrollTool.toolName, { bindings: [{ mouseButton: ToolEnums.MouseBindings.Wheel }] });
  group.setToolActive(TOOLS.zoom, { bindings: [{ mouseButton: ToolEnums.MouseBindings.Secondary }] });
  group.setToolActive(TOOLS.pan, { bindings: [{ mouseButton: ToolEnums.MouseBindings.Auxiliary }] });
  state.engine = engine;
  state.group = group;
  state.viewport = engine.getViewport(VIEWPORT);
  chooseTool('wl');
  const el = $('viewport');
  for (const ev of [Enums.Events.STACK_NEW_IMAGE, Enums.Events.VOI_MODIFIED, Enums.Events.IMAGE_RENDERED]) {
    el.addEventListener(ev, updateInfo);
  }
  for (const ev of [ToolEnums.Events.ANNOTATION_COMPLETED, ToolEnums.Events.ANNOTATION_MODIFIED,
    ToolEnums.Events.ANNOTATION_RENDERED]) {
    eventTarget.addEventListener(ev, updateMeasure);
  }
  new ResizeObserver(() => engine.resize(true, true)).observe(el);
}

function chooseTool(name) {
  // one tool on the left button; setToolPassive takes only that binding away, so zoom keeps the
  // right button and pan the middle one
  const group = state.group;
  for (const [key, toolName] of Object.entries(TOOLS)) {
    if (key !== name) group.setToolPassive(toolName);
  }
  group.setToolActive(TOOLS[name], { bindings: [{ mouseButton: ToolEnums.MouseBindings.Primary }] });
  state.tool = name;
  for (const b of document.querySelectorAll('[data-tool]')) {
    b.setAttribute('aria-pressed', String(b.dataset.tool === name));
  }
}

async function loadSeries(i) {
  const s = state.series[i];
  state.seriesIndex = i;
  $('series').value = String(i);
  say(t(lang, 'Loading…'));
  const seriesUID = value(s, '0020000E');
  const meta = await getJSON(`/studies/${studyUID}/series/${seriesUID}/metadata`);
  meta.sort((a, b) => (value(a, '00200013') ?? 0) - (value(b, '00200013') ?? 0));
  const imageIds = [];
  const instances = [];
  for (const m of meta) {
    if (!m['7FE00010'] && value(m, '00280010') === undefined) continue; // no pixels (SR, PR...)
    const sop = value(m, '00080018');
    const frames = Number(value(m, '00280008') || 1);
    const base = `wadors:${location.origin}${root}/studies/${studyUID}/series/${seriesUID}/instances/${sop}/frames/`;
    dicomImageLoader.wadors.metaDataManager.add(`${base}1`, m);
    for (let f = 1; f <= frames; f += 1) {
      imageIds.push(`${base}${f}`);
      instances.push({ sop, frame: f });
    }
  }
  state.imageIds = imageIds;
  state.instances = instances;
  if (!imageIds.length) {
    say(t(lang, 'This series has no images.'), true);
    return;
  }
  await state.viewport.setStack(imageIds, 0);
  state.viewport.render();
  say('');
  state.ready = true;
  updateInfo();
}

async function step(delta) {
  const vp = state.viewport;
  const n = Math.min(Math.max(vp.getCurrentImageIdIndex() + delta, 0), state.imageIds.length - 1);
  await vp.setImageIdIndex(n);
  updateInfo();
}

async function download() {
  const current = state.instances[state.viewport.getCurrentImageIdIndex()];
  if (!current) return;
  const seriesUID = value(state.series[state.seriesIndex], '0020000E');
  const q = new URLSearchParams({ requestType: 'WADO', studyUID, seriesUID, objectUID: current.sop,
                                  contentType: 'application/dicom' });
  const resp = await fetch(`${root}/wado?${q}`, { headers: headers(), credentials: 'same-origin' });
  if (!resp.ok) {
    say(`${t(lang, 'The download failed')} (HTTP ${resp.status})`, true);
    return;
  }
  const url = URL.createObjectURL(await resp.blob());
  const a = document.createElement('a');
  a.href = url;
  a.download = `${current.sop}.dcm`;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

function close() {
  const back = sameOriginPath(params.get('return'));
  if (back) location.assign(back);
  else if (history.length > 1) history.back();
  else location.assign('/portal/imaging');
}

function translatePage() {
  document.documentElement.lang = lang;
  for (const el of document.querySelectorAll('[data-t]')) el.textContent = t(lang, el.dataset.t);
  for (const el of document.querySelectorAll('[data-t-label]')) {
    el.setAttribute('aria-label', t(lang, el.dataset.tLabel));
  }
}

function wire() {
  $('viewport').addEventListener('contextmenu', (e) => e.preventDefault());
  $('prev').addEventListener('click', () => step(-1));
  $('next').addEventListener('click', () => step(1));
  $('reset').addEventListener('click', () => { state.viewport.resetCamera(); state.viewport.resetProperties();
    state.viewport.render(); updateInfo(); });
  $('download').addEventListener('click', download);
  $('close').addEventListener('click', close);
  $('series').addEventListener('change', (e) => loadSeries(Number(e.target.value)).catch(fail));
  for (const b of document.querySelectorAll('[data-tool]')) b.addEventListener('click', () => chooseTool(b.dataset.tool));
  document.addEventListener('keydown', (e) => {
    if (e.target instanceof HTMLSelectElement) return;
    const keys = { ArrowDown: 1, ArrowRight: 1, PageDown: 1, ArrowUp: -1, ArrowLeft: -1, PageUp: -1 };
    if (e.key === 'Escape') { e.preventDefault(); close(); } else if (e.key in keys && state.ready) {
      e.preventDefault();
      step(keys[e.key]);
    }
  });
}

function fail(err) {
  say(err.message || String(err), true);
}

async function main() {
  translatePage();
  wire();
  if (!/^[0-9.]{1,64}$/.test(studyUID)) {
    say(t(lang, 'No study chosen.'), true);
    return;
  }
  await setup();
  const series = await getJSON(`/studies/${studyUID}/series`);
  series.sort((a, b) => (value(a, '00200011') ?? 0) - (value(b, '00200011') ?? 0));
  state.series = series;
  const select = $('series');
  series.forEach((s, i) => {
    const opt = document.createElement('option');
    opt.value = String(i);
    opt.textContent = [value(s, '00080060'), value(s, '0008103E') || `${t(lang, 'Series')} ${value(s, '00200011') ?? i + 1}`]
      .filter(Boolean).join(' · ');
    select.append(opt);
  });
  if (!series.length) {
    say(t(lang, 'This study is not found or not yours to see.'), true);
    return;
  }
  await loadSeries(0);
}

main().catch(fail);
