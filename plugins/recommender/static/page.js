// The Recommender page's only script, served from the app's own static route: the page's
// Content-Security-Policy allows no inline script. Data goes into the page as text, never HTML.

// Airflow's UI shows the page in a frame sandboxed without allow-top-navigation, so a link to one
// of its own pages would open the whole UI inside the frame. The frame is same-origin: a click on
// an Airflow link asks the UI's router to go there instead (a history entry and a popstate, what
// the browser's back button sends it). Opened on its own, the page's links work as plain links.
document.addEventListener('click', (event) => {
  const link = event.target.closest('a[data-airflow]');
  if (!link || window.parent === window || event.button !== 0 || event.ctrlKey || event.metaKey
      || event.shiftKey) return;
  try {
    const to = new URL(link.href), top = window.parent;
    if (to.origin !== top.location.origin) return;
    top.history.pushState({}, '', to.pathname + to.search + to.hash);
    top.dispatchEvent(new PopStateEvent('popstate', {state: {}}));
    event.preventDefault();
  } catch (e) { /* not Airflow's frame: the link navigates as usual */ }
});

const rollback = document.getElementById('rollback');
if (rollback) {
  rollback.addEventListener('click', async (event) => {
    const button = event.target, out = document.getElementById('rollback-result');
    button.disabled = true; out.textContent = 'triggering recommend_rollback…';
    const response = await fetch(button.dataset.api, {method: 'POST', credentials: 'same-origin',
      headers: {'Content-Type': 'application/json'},
      body: JSON.stringify({logical_date: null, conf: {model_id: button.dataset.model}})});
    const body = await response.json().catch(() => ({}));
    if (response.ok) {
      const runId = String(body.dag_run_id), link = document.createElement('a');
      out.dataset.runId = runId;
      link.href = button.dataset.runs + encodeURIComponent(runId);
      link.dataset.airflow = '';
      link.textContent = runId;
      out.replaceChildren('recommend_rollback triggered: ', link);
      // A paused DAG keeps the run queued: say so rather than leave the user waiting.
      const dag = await fetch(button.dataset.dag, {credentials: 'same-origin'}).then((r) => r.json())
        .catch(() => ({}));
      if (dag.is_paused) out.append(' (queued: recommend_rollback is paused; unpause it to run)');
    } else {
      out.dataset.refused = response.status;
      out.textContent = 'Airflow refused the rollback (HTTP ' + response.status + '): '
        + (typeof body.detail === 'string' ? body.detail : JSON.stringify(body.detail || body));
      button.disabled = false;
    }
  });
}
