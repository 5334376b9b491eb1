// earthsynth web viewer: Gaussian splats (Inria-layout PLY, rendered by GaussianSplats3D) and meshes (GLB,
// three.js GLTFLoader) in one three.js scene, in the run's ENU metre frame (x east, y north, z up).
//
// Query: splats=<url of .ply>  mesh=<url of .glb>  (either or both; neither: a list of the run's files)
//        camera=x,y,z  target=x,y,z  (ENU metres; default: framed automatically, looking down obliquely)
//        fov=<vertical degrees, default 45>  sh=<SH degree rendered, 0..3, default 0>  ui=0 (hide the panels)
// Progress for scripts: window.__viewer = {ready, error, frames}; ready turns true once a frame with all the
// content (splats sorted for the final camera) has been drawn, error holds the message of a failure.
import * as THREE from 'three';
import { OrbitControls } from 'three/addons/controls/OrbitControls.js';
import { GLTFLoader } from 'three/addons/loaders/GLTFLoader.js';
import * as GS from '@mkkellogg/gaussian-splats-3d';

const state = { ready: false, error: null, frames: 0 };
window.__viewer = state;
const params = new URLSearchParams(location.search);
const view = document.getElementById('view');
const info = document.getElementById('info');
const BACKGROUND = 0x1d2126;
const Z_UP = new THREE.Vector3(0, 0, 1);

function fail(error) {
  const message = String((error && error.message) || error);
  if (state.error === null) state.error = message;
  info.textContent = 'error: ' + message;
  info.classList.add('error');
}
window.addEventListener('error', (e) => fail(e.error || e.message));
window.addEventListener('unhandledrejection', (e) => fail(e.reason));

function vectorParam(name) {
  if (!params.has(name)) return null;
  const values = params.get(name).split(',').map(Number);
  if (values.length !== 3 || !values.every(Number.isFinite)) {
    throw new Error(`${name}=${params.get(name)}: expected three numbers x,y,z (ENU metres)`);
  }
  return new THREE.Vector3(...values);
}

function numberParam(name, fallback, min, max) {
  if (!params.has(name)) return fallback;
  const value = Number(params.get(name));
  if (!(value >= min && value <= max)) throw new Error(`${name}=${params.get(name)}: expected ${min}..${max}`);
  return value;
}

const nextFrame = () => new Promise((resolve) => requestAnimationFrame(resolve));

// --------------------------------------------------------------------------------------------- content bounds

// Bounds of the splat centres from the 1st to the 99th percentile on each axis, so a few stray Gaussians
// far from the city do not shrink it to a speck. Large clouds are sampled.
function robustSplatBounds(splatMesh) {
  const count = splatMesh.getSplatCount();
  const step = Math.max(1, Math.floor(count / 50000));
  const axes = [[], [], []];
  const centre = new THREE.Vector3();
  for (let i = 0; i < count; i += step) {
    splatMesh.getSplatCenter(i, centre);
    axes[0].push(centre.x); axes[1].push(centre.y); axes[2].push(centre.z);
  }
  const low = [], high = [];
  for (const values of axes) {
    const sorted = Float64Array.from(values).sort();
    low.push(sorted[Math.floor(0.01 * (sorted.length - 1))]);
    high.push(sorted[Math.ceil(0.99 * (sorted.length - 1))]);
  }
  return new THREE.Box3(new THREE.Vector3(...low), new THREE.Vector3(...high));
}

// The distance along `direction` from the box centre at which all 8 corners fit the camera's view
// (pinhole bound per corner: lateral offset <= tan(half fov) * depth).
function fittingDistance(box, direction, camera) {
  const centre = box.getCenter(new THREE.Vector3());
  const right = new THREE.Vector3().crossVectors(Z_UP, direction).normalize();
  if (right.lengthSq() < 1e-12) right.set(1, 0, 0);
  const up = new THREE.Vector3().crossVectors(direction, right).normalize();
  const tanV = Math.tan(THREE.MathUtils.degToRad(camera.fov / 2));
  const tanH = tanV * camera.aspect;
  let distance = 0;
  for (let corner = 0; corner < 8; corner++) {
    const q = new THREE.Vector3(corner & 1 ? box.max.x : box.min.x, corner & 2 ? box.max.y : box.min.y,
                                corner & 4 ? box.max.z : box.min.z).sub(centre);
    const along = q.dot(direction);
    distance = Math.max(distance, along + Math.abs(q.dot(right)) / tanH, along + Math.abs(q.dot(up)) / tanV);
  }
  return Math.max(distance * 1.08, 1e-3);
}

// Place the camera: explicit camera / target parameters win; otherwise look at the content's centre from the
// south-south-east, 50 degrees above the horizon (an oblique view of a city, z up).
function placeCamera(camera, controls, box, options) {
  const size = box.getSize(new THREE.Vector3()).length();
  const target = options.target ? options.target.clone() : box.getCenter(new THREE.Vector3());
  let position = options.camera ? options.camera.clone() : null;
  if (!position) {
    const elevation = THREE.MathUtils.degToRad(50);
    const direction = new THREE.Vector3(0.35, -1, 0).normalize().multiplyScalar(Math.cos(elevation));
    direction.z = Math.sin(elevation);
    const framed = box.clone().translate(target.clone().sub(box.getCenter(new THREE.Vector3())));
    position = target.clone().addScaledVector(direction, fittingDistance(framed, direction, camera));
  }
  const distance = Math.max(position.distanceTo(target), 1e-3);
  camera.near = Math.max(distance / 1000, 1e-3);
  camera.far = (distance + size) * 10;
  camera.position.copy(position);
  camera.lookAt(target);
  camera.updateProjectionMatrix();
  controls.target.copy(target);
  controls.maxDistance = camera.far / 4;
  controls.update();
}

// --------------------------------------------------------------------------------------------- loading

// glTF's default material (for primitives that name none) is a rough metal, which reflects only the missing
// environment and turns black away from the sun. earthsynth's vertex-coloured meshes name no material, so
// such primitives are shown matte, with a warning on the console.
function showDefaultMaterialMatte(gltf, root) {
  let count = 0;
  root.traverse((o) => {
    const ref = o.isMesh ? gltf.parser.associations.get(o) : null;
    const primitive = ref && ref.meshes !== undefined
      ? gltf.parser.json.meshes[ref.meshes].primitives[ref.primitives || 0] : null;
    if (primitive && primitive.material === undefined && o.material.metalness !== undefined) {
      o.material.metalness = 0;
      count += 1;
    }
  });
  if (count) console.warn(`${count} mesh primitive(s) name no glTF material: shown matte, not as glTF's default metal`);
}

async function loadMesh(url, scene) {
  const gltf = await new GLTFLoader().loadAsync(url);
  const root = gltf.scene || (gltf.scenes && gltf.scenes[0]);
  if (!root) throw new Error(`${url}: the glTF file has no scene`);
  showDefaultMaterialMatte(gltf, root);
  // glTF is Y-up and earthsynth stores ENU as (east, up, -north): +90 degrees about x gives back z up
  const enu = new THREE.Group();
  enu.rotation.x = Math.PI / 2;
  enu.add(root);
  scene.add(enu);
  enu.updateMatrixWorld(true);
  let triangles = 0;
  root.traverse((o) => {
    if (o.isMesh) triangles += (o.geometry.index ? o.geometry.index.count : o.geometry.attributes.position.count) / 3;
  });
  return { box: new THREE.Box3().setFromObject(enu), triangles };
}

async function loadSplats(url, renderer, camera, scene, shDegree) {
  const viewer = new GS.Viewer({
    renderer, camera, threeScene: scene, rootElement: view,
    selfDrivenMode: false, useBuiltInControls: false, cameraUp: [0, 0, 1],
    sharedMemoryForWorkers: self.crossOriginIsolated === true,
    gpuAcceleratedSort: false,
    integerBasedSort: false,               // float distances: no overflow over a city's extent in metres
    sphericalHarmonicsDegree: shDegree,
    sceneRevealMode: GS.SceneRevealMode.Instant,
    logLevel: GS.LogLevel.None,
  });
  await viewer.addSplatScene(url, { format: GS.SceneFormat.Ply, showLoadingUI: false, progressiveLoad: false });
  const splatMesh = viewer.getSplatMesh();
  if (splatMesh.getSplatCount() === 0) throw new Error(`${url}: no visible Gaussians (all fully transparent?)`);
  return { viewer, box: robustSplatBounds(splatMesh), count: splatMesh.getSplatCount() };
}

async function showFileList() {
  const response = await fetch('/run-files.json');
  if (!response.ok) throw new Error(`run-files.json: HTTP ${response.status}`);
  const { files } = await response.json();
  const list = document.getElementById('files');
  list.hidden = false;
  list.textContent = files.length ? 'Files of this run:' : 'This run has no .ply or .glb files.';
  for (const file of files) {
    const link = document.createElement('a');
    const kind = file.toLowerCase().endsWith('.glb') ? 'mesh' : 'splats';
    link.href = '?' + new URLSearchParams({ [kind]: 'run/' + file.split('/').map(encodeURIComponent).join('/') });
    link.textContent = file;
    list.appendChild(link);
  }
  info.textContent = 'pick a file';
  state.ready = true;
}

// --------------------------------------------------------------------------------------------- main

async function main() {
  if (params.get('ui') === '0') document.body.classList.add('no-ui');
  const splatsUrl = params.get('splats'), meshUrl = params.get('mesh');
  if (!splatsUrl && !meshUrl) return showFileList();
  // all parameters are checked before anything is downloaded
  const options = { camera: vectorParam('camera'), target: vectorParam('target'),
                    fov: numberParam('fov', 45, 1, 150), sh: numberParam('sh', 0, 0, 3) };

  const renderer = new THREE.WebGLRenderer({ antialias: false, preserveDrawingBuffer: true });
  renderer.setPixelRatio(window.devicePixelRatio || 1);
  renderer.setSize(view.clientWidth, view.clientHeight);
  renderer.setClearColor(BACKGROUND, 1);
  view.appendChild(renderer.domElement);
  const camera = new THREE.PerspectiveCamera(options.fov, view.clientWidth / view.clientHeight);
  camera.up.copy(Z_UP);                    // before OrbitControls, which orbits about camera.up
  const controls = new OrbitControls(camera, renderer.domElement);
  controls.enableDamping = false;
  const scene = new THREE.Scene();
  // a sky / ground ambient and a sun from the south-east (no environment map: prefiltering one takes
  // 10 s in software WebGL)
  const hemisphere = new THREE.HemisphereLight(0xffffff, 0x505050, 1.0);
  hemisphere.position.copy(Z_UP);
  const sun = new THREE.DirectionalLight(0xffffff, 1.3);
  sun.position.set(0.4, -0.6, 1.0);
  scene.add(hemisphere, sun);

  // render on demand (software WebGL is slow): for 0.5 s after a camera change, and while splats are sorted
  let renderUntil = 0;
  const requestRender = () => { renderUntil = performance.now() + 500; };
  controls.addEventListener('change', requestRender);
  window.addEventListener('resize', () => {
    renderer.setSize(view.clientWidth, view.clientHeight);
    camera.aspect = view.clientWidth / view.clientHeight;
    camera.updateProjectionMatrix();
    requestRender();
  });

  const box = new THREE.Box3();
  const summary = [];
  let splats = null;
  if (meshUrl) {
    const mesh = await loadMesh(meshUrl, scene);
    box.union(mesh.box);
    summary.push(`mesh ${Math.round(mesh.triangles)} triangles`);
  }
  if (splatsUrl) {
    splats = await loadSplats(splatsUrl, renderer, camera, scene, options.sh);
    box.union(splats.box);
    summary.push(`${splats.count} splats`);
  }
  if (box.isEmpty()) throw new Error(`nothing to show in ${[meshUrl, splatsUrl].filter(Boolean).join(', ')}`);
  placeCamera(camera, controls, box, options);

  const draw = () => {
    if (splats) { splats.viewer.update(); splats.viewer.render(); } else renderer.render(scene, camera);
    state.frames += 1;
  };
  // a sort that finished since the last frame needs one more frame to show its order; that frame's update()
  // also starts the next of GaussianSplats3D's queued partial sorts, if any
  let sortPending = false;
  const loop = () => {
    requestAnimationFrame(loop);
    if (performance.now() < renderUntil || sortPending || (splats && splats.viewer.sortRunning)) draw();
    sortPending = Boolean(splats && splats.viewer.sortRunning);
  };
  if (splats) {
    // sort for the framed camera before calling the view ready (the load sorted for the default camera)
    splats.viewer.runSplatSort(true, true);
    while (splats.viewer.sortRunning) await nextFrame();
  }
  draw();
  await nextFrame();
  draw();
  state.ready = true;
  info.textContent = summary.join(' · ') + '   drag: orbit · right-drag: pan · wheel: zoom';
  requestAnimationFrame(loop);
}

main().catch(fail);
