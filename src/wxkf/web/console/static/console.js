// wxkf console: live updates (Server-Sent Events), upload progress, confirmations, the template form. No framework.
"use strict";

(function () {
  const csrf = () => (document.querySelector('meta[name="csrf-token"]') || {}).content || "";

  // The server renders and escapes every fragment; this script only swaps them in.
  async function refresh(url, target) {
    const response = await fetch(url, { headers: { Accept: "text/html" }, credentials: "same-origin" });
    if (response.status === 401) {
      window.location.assign("/console/login?next=" + encodeURIComponent(location.pathname + location.search));
      return;
    }
    if (response.ok) {
      target.innerHTML = await response.text();
      document.dispatchEvent(new CustomEvent("wxkf:refreshed", { detail: { id: target.id } }));
    }
  }

  function debounced(fn, ms) {
    let timer = null;
    return () => {
      if (timer) return;
      timer = setTimeout(() => { timer = null; fn(); }, ms);
    };
  }

  function live() {
    const body = document.body;
    const mode = body.dataset.live;
    if (!mode || !window.EventSource) return;
    const status = document.getElementById("live-status");
    let update;
    let mine = () => true;
    if (mode === "list") {
      const rows = document.getElementById("rows");
      update = debounced(() => refresh(body.dataset.rowsUrl + location.search, rows), 250);
    } else {
      const panel = document.getElementById("panel");
      const key = body.dataset.key;
      update = debounced(() => refresh(body.dataset.panelUrl, panel), 250);
      mine = (keys) => keys.includes(key) || keys.includes("*");
    }
    const source = new EventSource("/console/events");
    source.addEventListener("open", () => {
      if (status) status.classList.add("on");
      update(); // the stream listens from now on: catch up on what happened before it opened
    });
    source.addEventListener("error", () => { if (status) status.classList.remove("on"); });
    source.addEventListener("change", (event) => {
      const keys = JSON.parse(event.data);
      if (mine(keys)) update();
    });
  }

  // The reply form stays as typed; what it says about the budget, and why it cannot send, follow the live panel.
  // The send button is disabled while either the session or the budget refuses (the panel's reason) or the text
  // is over WeCom's limit, which counts UTF-8 bytes (a Chinese character is 3), not characters.
  function followBudget() {
    const form = document.getElementById("reply-form");
    if (!form) return;
    const send = form.querySelector("button[type=submit]");
    const text = form.querySelector("textarea");
    const bytes = document.getElementById("reply-bytes");
    const encoder = new TextEncoder();
    const sync = () => {
      const max = Number(bytes ? bytes.dataset.max : 0);
      const size = encoder.encode(text.value.trim()).length;
      const tooLong = max > 0 && size > max;
      if (bytes) {
        bytes.querySelector(".count").textContent = `${size} / ${max} 字节 / bytes` + (tooLong ? "，过长 / too long" : "");
        bytes.classList.toggle("error", tooLong);
      }
      if (send) send.disabled = (form.dataset.blocked || "") !== "" || tooLong;
    };
    text.addEventListener("input", sync);
    document.addEventListener("wxkf:refreshed", () => {
      const budget = document.getElementById("budget");
      const before = document.getElementById("budget-before");
      const blocked = document.getElementById("reply-blocked");
      if (!budget || !before) return;
      const why = budget.dataset.blocked || "";
      before.textContent = budget.dataset.explain;
      form.dataset.blocked = why;
      if (blocked) {
        blocked.textContent = why;
        blocked.hidden = why === "";
      }
      sync();
    });
    sync();
  }

  function upload() {
    const form = document.getElementById("kb-upload");
    if (!form) return;
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const box = document.getElementById("upload-progress");
      const bar = document.getElementById("upload-bar");
      const text = document.getElementById("upload-status");
      box.hidden = false;
      bar.value = 0;
      text.textContent = "上传中 / uploading…";
      const xhr = new XMLHttpRequest();
      xhr.open("POST", form.action);
      xhr.setRequestHeader("X-CSRF-Token", csrf());
      xhr.setRequestHeader("Accept", "application/x-ndjson");
      xhr.upload.addEventListener("progress", (e) => {
        if (e.lengthComputable) {
          bar.value = Math.round((e.loaded / e.total) * 50);
          text.textContent = `上传 / uploading ${Math.round((e.loaded / e.total) * 100)}%`;
        }
      });
      let seen = 0;
      const readLines = () => {
        const lines = xhr.responseText.slice(seen).split("\n");
        const complete = lines.slice(0, -1);
        seen += complete.reduce((n, line) => n + line.length + 1, 0);
        for (const line of complete) {
          if (!line.trim()) continue;
          const item = JSON.parse(line);
          if (item.error) {
            text.textContent = item.error;
            box.classList.add("failed");
          } else if (item.done_all) {
            bar.value = 100;
            text.textContent = "完成 / done: " + item.summary;
            setTimeout(() => window.location.reload(), 1200);
          } else if (item.total) {
            const share = item.done / item.total;
            bar.value = item.stage === "embed" ? 75 + share * 25 : 50 + share * 25;
            const stage = item.stage === "embed" ? "向量化 / embedding" : "切分 / chunking";
            text.textContent = `${stage} ${item.done}/${item.total}`;
          }
        }
      };
      xhr.addEventListener("progress", readLines);
      xhr.addEventListener("load", () => {
        readLines();
        if (xhr.status === 401) text.textContent = "请先登录 / log in first";
        else if (xhr.status >= 400 && !text.textContent.startsWith("完成")) text.textContent = `HTTP ${xhr.status}`;
      });
      xhr.addEventListener("error", () => { text.textContent = "上传失败：网络错误 / upload failed: network error"; });
      xhr.send(new FormData(form));
    });
  }

  function confirmations() {
    document.addEventListener("submit", (event) => {
      const form = event.target;
      if (form instanceof HTMLFormElement && form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
        event.preventDefault();
      }
    });
  }

  // The template form shows the fields of the kind chosen (both show without the script).
  function templateKind() {
    const select = document.getElementById("template-kind");
    if (!select) return;
    const show = () => document.querySelectorAll("fieldset[data-kind]").forEach((set) => {
      set.hidden = set.dataset.kind !== select.value;
    });
    select.addEventListener("change", show);
    show();
  }

  document.addEventListener("DOMContentLoaded", () => {
    live();
    followBudget();
    upload();
    confirmations();
    templateKind();
  });
})();
